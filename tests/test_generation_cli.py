"""Translation, LoRA and chat through the command line, on slices of the real built-in data: finetune (with
the baselines in the same report), then predict, evaluate and chat with the saved model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from lmcraft.chat import ChatSession, run_chat
from lmcraft.cli import main
from lmcraft.data.builtin import MissingPackageError, prepare
from lmcraft.data.readers import jsonl_records, write_jsonl
from lmcraft.inference.predictor import Predictor
from lmcraft.model.generate import GenerationConfig
from lmcraft.model.io import load_model_dir
from lmcraft.tokenizer import TextTokenizer, train_tokenizer

TRAIN = ["--size", "tiny", "--max-len", "64", "--max-target-tokens", "24", "--max-steps", "8", "--eval-every", "4",
         "--batch-size", "16", "--lr", "3e-3", "--no-progress", "--no-tensorboard", "--num-beams", "2"]


def _slice(source: Path, out: Path, sizes: dict[str, int]) -> Path:
    out.mkdir(parents=True)
    for split, n in sizes.items():
        records = [record for _, record in jsonl_records(source / f"{split}.jsonl")]
        write_jsonl(out / f"{split}.jsonl", records[:n])
    return out


@pytest.fixture(scope="module")
def gettext(tmp_path_factory: pytest.TempPathFactory) -> Path:
    full = tmp_path_factory.mktemp("data") / "gettext"
    try:
        prepare("gettext-en-zh", full)
    except MissingPackageError as e:  # a machine without the zh_CN catalogues
        pytest.skip(f"no gettext catalogues: {e}")
    return _slice(full, full.parent / "slice", {"train": 400, "dev": 32, "test": 40})


@pytest.fixture(scope="module")
def tokenizer_dir(gettext: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [r[k] for _, r in jsonl_records(gettext / "train.jsonl") for k in ("source", "target")]
    out = tmp_path_factory.mktemp("tok")
    TextTokenizer(train_tokenizer(texts, kind="bpe", vocab_size=800)).save(out)
    return out


def test_translation_finetune_reports_bleu_next_to_the_baselines(gettext: Path, tokenizer_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mt"
    assert main(["finetune", "--task", "seq2seq", "--data", str(gettext), "--tokenizer", str(tokenizer_dir),
                 "--out", str(out), *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    test, baseline = summary["test"], summary["baseline"]["test"]
    assert test["n"] == 40 and {"bleu", "chrf", "rougeL", "target_loss", "placeholders_intact"} <= set(test)
    assert 0 <= test["bleu"] <= 100 and test["target_loss"] < 7.0  # ln(800) = 6.7 for a uniform guess
    assert baseline["translation_memory/bleu"] > baseline["copy_source/bleu"] > 0
    records = [json.loads(x) for x in (out / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 40 and {"source", "reference", "output"} <= set(records[0])
    config = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["heads"]["lm"]["task"] == "seq2seq" and config["architecture"]["causal"]
    capsys.readouterr()
    assert main(["predict", str(out / "best"), "Open the file", "--num-beams", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "Open the file"


def test_a_translation_memory_model_saves_its_memory_and_predicts_from_it(gettext: Path, tokenizer_dir: Path,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mt-memory"
    assert main(["finetune", "--task", "seq2seq", "--memory", "--data", str(gettext), "--tokenizer",
                 str(tokenizer_dir), "--out", str(out), *TRAIN, "--no-baseline"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["n"] == 40 and 0 <= summary["test"]["placeholders_intact"] <= 1
    records = [json.loads(x) for x in (out / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    sources = [r["source"] for _, r in jsonl_records(gettext / "test.jsonl")]
    assert [r["source"] for r in records] == sources, "the report shows the source, not the memory beside it"
    train = [[r["source"], r["target"]] for _, r in jsonl_records(gettext / "train.jsonl")]
    config = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["heads"]["lm"]["memory"] == train, "the model directory holds the training pairs"
    predictor = Predictor(out / "best")
    assert predictor.task.memory is not None and len(predictor.task.memory.pairs) == 400
    capsys.readouterr()
    assert main(["predict", str(out / "best"), "Open the file", "--num-beams", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "Open the file"


def test_lora_trains_few_parameters_and_saves_a_merged_model(gettext: Path, tokenizer_dir: Path,
                                                             tmp_path: Path) -> None:
    base = tmp_path / "base"
    assert main(["finetune", "--task", "seq2seq", "--data", str(gettext), "--tokenizer", str(tokenizer_dir),
                 "--out", str(base), "--no-baseline", *TRAIN]) == 0
    lora = tmp_path / "lora"
    assert main(["finetune", "--task", "seq2seq", "--data", str(gettext), "--init", str(base / "best"), "--out",
                 str(lora), "--no-baseline", "--lora-rank", "4", *TRAIN]) == 0
    config = json.loads((lora / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["lora"]["rank"] == 4 and config["lora"]["trainable_percent"] < 5
    before, _, _ = load_model_dir(base / "best")
    after, _, _ = load_model_dir(lora / "best")  # a plain model: the adapters are merged into the weights
    changed = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert changed and all(k.endswith(("qkv.weight", "out.weight")) for k in changed), changed


def test_encoder_decoder_layout_through_the_cli(gettext: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "encdec"
    assert main(["finetune", "--task", "seq2seq", "--layout", "encoder-decoder", "--decoder-layers", "1", "--data",
                 str(gettext), "--tokenizer", str(tokenizer_dir), "--out", str(out), "--no-baseline", *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["n"] == 40
    config = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["heads"]["decoder"]["kind"] == "decoder" and not config["architecture"]["causal"]


def test_chat_finetune_then_a_streamed_conversation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "chat-en"
    prepare("chatterbot-en", full)
    data = _slice(full, tmp_path / "chat", {"train": 200, "dev": 20, "test": 10})
    texts = [m["content"] for _, r in jsonl_records(data / "train.jsonl") for m in r["messages"]]
    TextTokenizer(train_tokenizer(texts, kind="bpe", vocab_size=600)).save(tmp_path / "tok")
    out = tmp_path / "bot"
    assert main(["finetune", "--task", "chat", "--data", str(data), "--tokenizer", str(tmp_path / "tok"), "--out",
                 str(out), *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["test"]["n"] >= 10 and "translation_memory/rougeL" in summary["baseline"]["test"]
    model, tokenizer, _ = load_model_dir(out / "best")
    assert tokenizer.tokenizer.token_to_id("<|assistant|>") is not None, "the role tokens are saved"
    session = ChatSession(Predictor((model, tokenizer)), GenerationConfig(max_new_tokens=8))
    lines = iter(["Hello", "/reset", "How are you?"])

    def read(_prompt: str) -> str:
        line = next(lines, None)
        if line is None:
            raise EOFError  # Ctrl-D
        return line

    shown = io.StringIO()
    assert run_chat(session, read=read, out=shown) == 0
    assert shown.getvalue().count("bot> ") == 2 and "(new conversation)" in shown.getvalue()
    assert [t.role for t in session.turns] == ["user", "assistant"], "/reset dropped the first exchange"


def test_a_model_without_a_chat_head_is_refused(tmp_path: Path, gettext: Path, tokenizer_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mt"
    assert main(["finetune", "--task", "seq2seq", "--data", str(gettext), "--tokenizer", str(tokenizer_dir),
                 "--out", str(out), "--no-baseline", *TRAIN[:4], "--max-steps", "2", "--eval-every", "2",
                 "--no-progress"]) == 0
    assert main(["chat", str(out / "best")]) == 2
    assert "not fine-tuned for dialogue" in capsys.readouterr().err

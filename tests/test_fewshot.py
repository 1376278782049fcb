"""Few-shot learning: balanced seeded draws, the prompt task's cloze encoding and scores, and the
lmcraft fewshot report end to end on a small model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcraft.config import TrainConfig
from lmcraft.data.readers import Example
from lmcraft.fewshot import run_fewshot, sample_per_class
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.stage_options import FewshotConfig
from lmcraft.tasks.classify.prompt import PromptClassify, parse_verbalizer
from lmcraft.tokenizer import TextTokenizer
from tests.conftest import tiny_config

TEMPLATE = "{text}总之很{mask}。"


def test_draws_are_balanced_and_repeatable() -> None:
    examples = [Example(f"t{i}", "pos" if i % 3 else "neg") for i in range(60)]
    first = sample_per_class(examples, ["neg", "pos"], 8, seed=4)
    assert [ex.label for ex in first].count("neg") == 8 and len(first) == 16
    assert first == sample_per_class(examples, ["neg", "pos"], 8, seed=4)
    assert first != sample_per_class(examples, ["neg", "pos"], 8, seed=5)
    with pytest.raises(ValueError, match="label 'neg' has 20 examples; k=32"):
        sample_per_class(examples, ["neg", "pos"], 32, seed=0)


def test_bad_templates_and_verbalizers() -> None:
    with pytest.raises(ValueError, match="label=word"):
        parse_verbalizer("pos:好")
    with pytest.raises(ValueError, match="once each"):
        PromptClassify(["neg", "pos"], {"neg": "差", "pos": "好"}, "{text}很好", 0)
    with pytest.raises(ValueError, match=r"no word for label\(s\) \['pos'\]"):
        PromptClassify(["neg", "pos"], {"neg": "差"}, TEMPLATE, 0)


def test_prompt_encoding_keeps_the_template_and_scores_the_verbalizer(zh_tokenizer: TextTokenizer) -> None:
    task = PromptClassify(["neg", "pos"], {"neg": "差", "pos": "好"}, TEMPLATE, zh_tokenizer.pad_id)
    long_text = "这本书的内容非常丰富" * 20
    items = task.encode(zh_tokenizer, [Example("质量不错", "pos"), Example(long_text, "neg")], max_len=32)
    short, long = items
    assert len(long.ids) == 32 and long.ids[long.mask_position] == zh_tokenizer.mask_id
    decoded = zh_tokenizer.decode(long.ids[long.mask_position - 3 : long.mask_position + 3], skip_special_tokens=False)
    assert decoded.replace(" ", "") == "总之很[MASK]。[SEP]"  # a long text loses its end, never the template
    assert (short.label, long.label) == (1, 0)
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size), {"mlm": {"kind": "mlm"}}).eval()
    batch = task.collate(items)
    with torch.no_grad():
        hidden = model(batch["input_ids"], batch["padding_mask"])
        full = model.heads["mlm"](hidden, batch["padding_mask"].bool(), model.backbone.embed.token.weight)  # (N, V)
        rows = torch.cat([torch.tensor([0]), batch["padding_mask"].sum(1).cumsum(0)[:-1]])  # first row of each text
        expected = full[rows + torch.tensor([it.mask_position for it in items])][:, task.word_ids]
        torch.testing.assert_close(task.logits(model, batch), expected)
    with pytest.raises(ValueError, match="is 2 tokens"):
        PromptClassify(["neg", "pos"], {"neg": "很差", "pos": "好"}, TEMPLATE, 0).bind(zh_tokenizer)


@pytest.mark.slow
def test_fewshot_report_end_to_end(tmp_path: Path, sentiment_dir: Path, zh_tokenizer: TextTokenizer) -> None:
    model_dir = tmp_path / "pretrained"
    save_model_dir(model_dir, Model(tiny_config(vocab_size=zh_tokenizer.vocab_size), {"mlm": {"kind": "mlm"}}),
                   zh_tokenizer)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (data / f"{split}.jsonl").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    cfg = FewshotConfig(data=str(data), init=str(model_dir), out=str(tmp_path / "out"), shots=["4", "8"],
                        seeds=["0", "1"], max_len=48,
                        train=TrainConfig(lr=1e-3, max_steps=4, eval_every=2, batch_size=4, progress=False))
    summary = run_fewshot(cfg)
    assert {(r["k"], r["seed"], r["method"]) for r in summary["runs"]} == {
        (k, s, m) for k in (4, 8) for s in (0, 1) for m in ("head", "prompt")}
    assert all(0 <= r["accuracy"] <= 1 for r in summary["runs"])
    row = summary["table"][0]
    accuracies = [r["accuracy"] for r in summary["runs"] if r["k"] == 4 and r["method"] == "prompt"]
    assert row["prompt"]["mean"] == pytest.approx(sum(accuracies) / 2)
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "prompt-based (PET)" in report and "| 8 |" in report
    assert json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))["n_test"] == 200
    assert not list((tmp_path / "out").glob("run-*"))  # few-shot checkpoints are removed

"""ONNX export: onnxruntime gives lmcraft's outputs (within 1e-4) on padded batches of Chinese texts of mixed
lengths and on one text, for classifiers of every pooling, taggers, QA span heads and sentence embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmcraft.cli import main
from lmcraft.data.batching import pad
from lmcraft.inference.predictor import Predictor, task_for
from lmcraft.model.crf import FORBIDDEN
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.model.onnx_export import export_onnx
from lmcraft.tokenizer import TextTokenizer
from tests.conftest import tiny_config

ort = pytest.importorskip("onnxruntime")


def texts(corpus: Path, n: int = 7) -> list[str]:
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line[: 4 + 23 * i % 90] for i, line in enumerate(lines[:n])]  # a few to 64+ tokens (cut at 64)


def tiny_model(tokenizer: TextTokenizer, heads: dict[str, dict[str, object]], path: Path) -> Path:
    """A tiny encoder with weights drawn wide enough that texts get clearly different outputs, saved."""
    torch.manual_seed(0)
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size, max_len=64), heads)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(std=0.3)
    return save_model_dir(path, model, tokenizer)


def run_onnx(out: Path, ids: torch.Tensor, mask: torch.Tensor,
             segments: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    info = json.loads((out / "lmcraft_onnx.json").read_text(encoding="utf-8"))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if "token_type_ids" in info["inputs"]:
        feed["token_type_ids"] = (segments if segments is not None else torch.zeros_like(ids)).numpy()
    assert [i.name for i in session.get_inputs()] == info["inputs"]
    return dict(zip(info["outputs"], session.run(info["outputs"], feed), strict=True))


def batches(tokenizer: TextTokenizer, lines: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The padded batch of every text, and the first text alone."""
    ids = tokenizer.encode(lines, max_len=64)
    return [pad(ids, tokenizer.pad_id), pad(ids[:1], tokenizer.pad_id)]


def close(got: np.ndarray, want: torch.Tensor, where: torch.Tensor | None = None) -> None:
    got_t = torch.from_numpy(got)
    if where is not None:  # per-token outputs: real tokens only
        got_t, want = got_t[where.bool()], want[where.bool()]
    torch.testing.assert_close(got_t, want.float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", pytest.param("cls", marks=pytest.mark.slow),
                                     pytest.param("pooler", marks=pytest.mark.slow)])
def test_classifier_gives_lmcrafts_probabilities(pooling: str, zh_tokenizer: TextTokenizer, peoples_daily: Path,
                                                 tmp_path: Path) -> None:
    spec = {"kind": "classify", "task": "classify", "n_labels": 3, "labels": ["neg", "pos", "mid"], "pooling": pooling}
    model_dir = tiny_model(zh_tokenizer, {"classify": spec}, tmp_path / "model")
    assert main(["export", "--to", "onnx", str(model_dir), str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "lmcraft_onnx.json").read_text(encoding="utf-8"))
    assert info["labels"] == ["neg", "pos", "mid"] and info["pooling"] == pooling and info["max_length"] == 64
    assert (tmp_path / "onnx" / "tokenizer.json").exists()
    predictor = Predictor(model_dir)
    lines = texts(peoples_daily)
    for ids, mask in batches(zh_tokenizer, lines):
        out = run_onnx(tmp_path / "onnx", ids, mask)
        with torch.no_grad():
            logits = task_for(predictor.model).logits(predictor.model, {"input_ids": ids, "padding_mask": mask})
        close(out["logits"], logits)
        close(out["probabilities"], logits.softmax(-1))
    spread = out["probabilities"].max() - out["probabilities"].min()
    assert spread > 0.05, "the weights should give the labels clearly different probabilities"
    answers = predictor.predict(lines)  # the public API gives the same probabilities
    want = torch.tensor([[a["probabilities"][name] for name in info["labels"]] for a in answers])
    close(run_onnx(tmp_path / "onnx", *batches(zh_tokenizer, lines)[0])["probabilities"], want)


@pytest.mark.slow
@pytest.mark.parametrize(("crf", "ngrams"), [(False, 0), (True, 0), (True, 5000)], ids=["softmax", "crf", "ngrams"])
def test_tagger_gives_lmcrafts_emissions(crf: bool, ngrams: int, zh_tokenizer: TextTokenizer, peoples_daily: Path,
                                         tmp_path: Path) -> None:
    spec = {"kind": "tag", "task": "tag", "n_labels": 3, "labels": ["O", "B-LOC", "I-LOC"], "crf": crf,
            "ngrams": ngrams}
    model_dir = tiny_model(zh_tokenizer, {"tag": spec}, tmp_path / "model")
    summary = export_onnx(model_dir, tmp_path / "onnx")
    assert summary["outputs"] == ["emissions"]
    predictor = Predictor(model_dir)
    for ids, mask in batches(zh_tokenizer, texts(peoples_daily)):
        out = run_onnx(tmp_path / "onnx", ids, mask)
        with torch.no_grad():
            want = predictor.task.emissions(predictor.model, {"input_ids": ids, "padding_mask": mask})
        close(out["emissions"], want, mask)
    info = json.loads((tmp_path / "onnx" / "lmcraft_onnx.json").read_text(encoding="utf-8"))
    assert ("crf" in info) == crf
    if crf:
        crf_layer = predictor.model.heads["tag"].crf
        assert torch.tensor(info["crf"]["transitions"]).equal(crf_layer.scores()[1].detach())
        assert min(info["crf"]["transitions"][0]) < FORBIDDEN / 2  # O → I-…: the scheme's rules travel with it


@pytest.mark.slow
def test_qa_span_head_gives_lmcrafts_start_and_end_logits(zh_tokenizer: TextTokenizer, peoples_daily: Path,
                                                          tmp_path: Path) -> None:
    model_dir = tiny_model(zh_tokenizer, {"qa": {"kind": "span", "task": "qa"}}, tmp_path / "model")
    export_onnx(model_dir, tmp_path / "onnx")
    model = load_model_dir(model_dir)[0]
    lines = texts(peoples_daily)
    ids, segments = zh_tokenizer.encode([line[:8] for line in lines], lines, max_len=64)  # question, context
    for rows in (slice(None), slice(0, 1)):
        batch, mask = pad(ids[rows], zh_tokenizer.pad_id)
        seg, _ = pad(segments[rows], 0)
        out = run_onnx(tmp_path / "onnx", batch, mask, seg)
        with torch.no_grad():
            start, end = model.heads["qa"](model(batch, mask, seg))
        close(out["start_logits"], start, mask)
        close(out["end_logits"], end, mask)


@pytest.mark.slow
def test_bare_encoder_gives_predictor_embeddings(zh_tokenizer: TextTokenizer, peoples_daily: Path,
                                                 tmp_path: Path) -> None:
    model_dir = tiny_model(zh_tokenizer, {}, tmp_path / "model")
    assert export_onnx(model_dir, tmp_path / "onnx")["kind"] == "embeddings"
    lines = texts(peoples_daily)
    want = torch.tensor(Predictor(model_dir, require_task=False).embed(lines))
    padded, one = batches(zh_tokenizer, lines)
    close(run_onnx(tmp_path / "onnx", *padded)["embeddings"], want)
    close(run_onnx(tmp_path / "onnx", *one)["embeddings"], want[:1])


def test_decoders_and_other_heads_are_refused(zh_tokenizer: TextTokenizer, tmp_path: Path) -> None:
    model_dir = tiny_model(zh_tokenizer, {"mlm": {"kind": "mlm"}}, tmp_path / "model")
    with pytest.raises(ValueError, match="classify, tag and span"):
        export_onnx(model_dir, tmp_path / "onnx", head="mlm")
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
def test_minilm_embeddings_through_onnx(tmp_path: Path) -> None:
    """The built-in all-MiniLM-L6-v2, a real BERT with segments: onnxruntime gives Predictor.embed's vectors."""
    from lmcraft.model.builtin import resolve_model_dir

    lines = ["The compiler crashed again, so I rewrote the parser in a weekend.", "Short one.",
             "Politics is the art of looking for trouble."]
    export_onnx(resolve_model_dir("all-minilm-l6-v2"), tmp_path / "onnx")
    predictor = Predictor("all-minilm-l6-v2", require_task=False)
    ids, mask = pad(predictor.tokenizer.encode(lines, max_len=predictor.max_len), predictor.tokenizer.pad_id)
    out = run_onnx(tmp_path / "onnx", ids, mask)
    close(out["embeddings"], torch.tensor(predictor.embed(lines)))

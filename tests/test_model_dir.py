"""Model directories: save → load gives identical logits, and a failed save leaves the old model intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcraft.model import io
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.task import Classify
from lmcraft.tokenizer import TextTokenizer
from tests.conftest import tiny_config


def classifier(zh_tokenizer: TextTokenizer, **overrides: object) -> tuple[Model, Classify]:
    task = Classify(["neg", "pos"], pad_id=zh_tokenizer.pad_id)
    cfg = tiny_config(vocab_size=zh_tokenizer.vocab_size, **overrides)
    return Model(cfg, {"mlm": {"kind": "mlm"}, task.head: task.head_spec()}), task


@pytest.mark.parametrize("overrides", [{}, {"norm_first": True, "position": "sinusoidal"}])
def test_save_then_load_gives_identical_logits(zh_tokenizer: TextTokenizer, tmp_path: Path, overrides: dict) -> None:
    model, task = classifier(zh_tokenizer, **overrides)
    model.eval()
    from lmcraft.data.readers import Example

    items = task.encode(zh_tokenizer, [Example("这本书很好看", "pos"), Example("质量太差了，失望", "neg")], 64)
    batch = task.collate(items)
    io.save_model_dir(tmp_path / "m", model, zh_tokenizer, extra={"stage": "test"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded, tokenizer, config = io.load_model_dir(tmp_path / "m")
    assert config["heads"]["classify"]["labels"] == ["neg", "pos"]
    assert tokenizer.encode(["这本书很好看"], max_len=64) == zh_tokenizer.encode(["这本书很好看"], max_len=64)
    with torch.no_grad():
        assert torch.equal(task.logits(model, batch), task.logits(loaded, batch))


def test_backbone_only_load_drops_heads(zh_tokenizer: TextTokenizer, tmp_path: Path) -> None:
    model, _ = classifier(zh_tokenizer)
    io.save_model_dir(tmp_path / "m", model, zh_tokenizer)
    loaded, _, _ = io.load_model_dir(tmp_path / "m", heads=False)
    assert len(loaded.heads) == 0
    torch.testing.assert_close(loaded.backbone.state_dict(), model.backbone.state_dict())


def test_failed_save_keeps_the_previous_model(zh_tokenizer: TextTokenizer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = classifier(zh_tokenizer)
    io.save_model_dir(tmp_path / "best", model, zh_tokenizer, extra={"stage": "first"})

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        io.save_model_dir(tmp_path / "best", model, zh_tokenizer, extra={"stage": "second"})
    assert json.loads((tmp_path / "best" / "config.json").read_text())["stage"] == "first"
    io.load_model_dir(tmp_path / "best")  # still loads
    assert [p.name for p in tmp_path.iterdir()] == ["best"], "no staging directory is left behind"


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        io.load_model_dir(tmp_path)


def test_mean_pooling_ignores_padding(zh_tokenizer: TextTokenizer) -> None:
    task = Classify(["neg", "pos"], pad_id=zh_tokenizer.pad_id, pooling="mean")
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size), {task.head: task.head_spec()}).eval()
    from lmcraft.data.readers import Example

    short, long = task.encode(zh_tokenizer, [Example("好", "pos"), Example("这本书很好看，推荐大家买", "pos")], 64)
    with torch.no_grad():
        alone = task.logits(model, task.collate([short]))
        batched = task.logits(model, task.collate([short, long]))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)

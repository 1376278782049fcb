"""A model directory may come from anyone: every defect in it is one line naming the file, found before the
model is built, and its compiled packages (native code) run only when asked or built here by this user."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch

from lmcraft.cli import main
from lmcraft.inference import compiled
from lmcraft.inference.compiled import KINDS, package_path, stamp_of, stamp_path, trust
from lmcraft.inference.predictor import Predictor
from lmcraft.model.checks import ModelDirError
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from tests.conftest import tiny_config

HEADS = {"classify": {"kind": "classify", "n_labels": 2, "labels": ["neg", "pos"], "pooling": "cls"}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = TextTokenizer(train_tokenizer(["今天天气很好", "good day"] * 20, vocab_size=200, min_frequency=1))
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size), HEADS)
    return save_model_dir(tmp_path_factory.mktemp("models") / "classifier", model, tokenizer)


@pytest.fixture
def copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "classifier"))


def edit_config(path: Path, **architecture: object) -> None:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["architecture"].update(architecture)
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")


def one_line_naming(error: pytest.ExceptionInfo, file: Path) -> str:
    message = str(error.value)
    assert message.startswith(str(file)) and "\n" not in message, message
    return message


def test_the_directory_loads(model_dir: Path) -> None:
    model, _, _ = load_model_dir(model_dir)
    assert "classify" in model.heads


def test_truncated_weights_are_one_line(copy: Path) -> None:
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "cut short" in one_line_naming(error, weights)


def test_config_inconsistent_with_the_weights(copy: Path) -> None:
    vocab_size = json.loads((copy / "config.json").read_text(encoding="utf-8"))["architecture"]["vocab_size"]
    edit_config(copy, vocab_size=5000)
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "vocab_size × d_model = 5,000 × 32" in one_line_naming(error, copy / "model.safetensors")
    edit_config(copy, vocab_size=vocab_size, n_layer=3)
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "holds 2 blocks but config.json says n_layer=3" in one_line_naming(error, copy / "model.safetensors")


def test_other_shapes_inconsistent_are_one_line(copy: Path) -> None:
    edit_config(copy, d_ff=128)  # not checked from the header: torch's size mismatch, as one line
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "size mismatch" in one_line_naming(error, copy / "model.safetensors")


def test_huge_d_model_is_refused_before_allocating(copy: Path) -> None:
    edit_config(copy, d_model=10_000_000)
    start = time.perf_counter()
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert time.perf_counter() - start < 2
    assert "d_model=10,000,000 is out of range" in one_line_naming(error, copy / "config.json")
    edit_config(copy, d_model=32768, n_layer=512, d_ff=131072)  # each in range, together 6,000 G parameters
    with pytest.raises(ModelDirError, match="G parameters, more than the 20 G"):
        load_model_dir(copy)
    edit_config(copy, d_model=30, n_layer=2, d_ff=64)
    with pytest.raises(ModelDirError, match=r"config\.json: d_model=30 does not divide into n_head=4 heads"):
        load_model_dir(copy)


def test_huge_hidden_size_of_a_hugging_face_config_is_refused(tmp_path: Path) -> None:
    hf = {"model_type": "bert", "vocab_size": 100, "num_hidden_layers": 2, "hidden_size": 10_000_000,
          "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}
    (tmp_path / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ModelDirError) as error:
        load_model_dir(tmp_path)
    assert time.perf_counter() - start < 2
    assert "hidden_size=10,000,000 is out of range" in one_line_naming(error, tmp_path / "config.json")
    del hf["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    with pytest.raises(ModelDirError, match="missing field 'hidden_size'"):
        load_model_dir(tmp_path)


def test_garbage_tokenizer_is_one_line(copy: Path) -> None:
    (copy / "tokenizer.json").write_text('{"version": "1.0", "model": 42}', encoding="utf-8")
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "not a tokenizer" in one_line_naming(error, copy / "tokenizer.json")


def test_invalid_config_json_names_the_file(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "config.json").write_text('{"format": "lmcraft-model/1",\n "architecture": {,}}', encoding="utf-8")
    with pytest.raises(ModelDirError) as error:
        load_model_dir(copy)
    assert "invalid JSON" in one_line_naming(error, copy / "config.json") and "line 2" in str(error.value)
    assert main(["predict", str(copy), "好"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lmcraft: error: {copy / 'config.json'}: invalid JSON") and err.count("\n") == 1


def fake_packages(path: Path) -> None:
    """A compiled/ folder whose stamp matches the weights, as a directory received from someone holds."""
    stamp_path(path, "classify").parent.mkdir(exist_ok=True)
    for kind in KINDS:
        package_path(path, "classify", kind).write_bytes(b"native code from someone else " + kind.encode())
    stamp = {**stamp_of(path, "classify"), "inputs": {"one": ["input_ids"], "batch": ["input_ids"]}, "max_batch": 8}
    stamp_path(path, "classify").write_text(json.dumps(stamp), encoding="utf-8")


def test_compiled_packages_run_only_when_asked_or_built_here(copy: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    loaded: list[str] = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda p: loaded.append(p) or (lambda **kw: None))
    fake_packages(copy)
    assert Predictor(copy).compiled is None and not loaded  # the default: never
    with pytest.warns(UserWarning, match="not built by `lmcraft compile` on this machine"):
        assert Predictor(copy, compiled="trusted").compiled is None  # what predict / evaluate do without --compiled
    assert not loaded
    assert Predictor(copy, compiled=True).compiled is not None and len(loaded) == 2  # --compiled
    loaded.clear()
    trust([package_path(copy, "classify", kind) for kind in KINDS])  # as `lmcraft compile` records them
    assert compiled.trust_file() == tmp_path / "config" / "lmcraft" / "trusted-packages.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Predictor(copy, compiled="trusted").compiled is not None and len(loaded) == 2
    package_path(copy, "classify", "one").write_bytes(b"swapped after compiling")
    with pytest.warns(UserWarning, match="not built by"):
        assert Predictor(copy, compiled="trusted").compiled is None

"""Ahead-of-time compiled classifiers: the probabilities of the model itself, for one text, padded batches
and text pairs, and never a package built for other weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmcraft.data.readers import Example
from lmcraft.inference.compiled import KINDS, compile_classifier, load_compiled, package_path
from lmcraft.inference.predictor import task_for
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir, tensors_for_saving
from lmcraft.tokenizer import TextTokenizer
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # building a package runs a C++ compiler for half a minute


@pytest.fixture(scope="module")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's config folder, where `lmcraft compile` records the packages it built (not the real one)."""
    return tmp_path_factory.mktemp("config")


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory: pytest.TempPathFactory, zh_tokenizer: TextTokenizer, config_home: Path) -> Path:
    """A classifier over real Chinese text, weights drawn wide enough that texts get clearly different
    probabilities, with its package built (and trusted, in ``config_home``)."""
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=zh_tokenizer.vocab_size, max_len=64)
    model = Model(cfg, {"classify": {"kind": "classify", "n_labels": 3, "labels": ["a", "b", "c"],
                                     "pooling": "pooler"}})
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(std=0.3)
    path = save_model_dir(tmp_path_factory.mktemp("models") / "classifier", model, zh_tokenizer)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(config_home))
        compile_classifier(path, max_batch=8)  # batches of 16 below go through in slices
    return path


def texts(corpus: Path, n: int) -> list[str]:
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line[: 10 + 7 * i % 120] for i, line in enumerate(lines[:n])]  # lengths from a few to 64+ tokens


def test_the_package_gives_the_models_probabilities(compiled_dir: Path, peoples_daily: Path) -> None:
    model, tokenizer, _ = load_model_dir(compiled_dir)
    compiled = load_compiled(compiled_dir, "classify")  # asked for: trusted or not
    assert compiled is not None
    examples = [Example(t) for t in texts(peoples_daily, 40)]
    examples += [Example(t, pair=u) for t, u in zip(texts(peoples_daily, 6), texts(peoples_daily, 12)[6:],
                                                     strict=True)]
    for batch_size in (1, 16):  # one text at a time, and padded batches of mixed lengths
        task = task_for(model)
        want = torch.cat([p for _, p in task.probabilities(model, tokenizer, examples, max_len=model.input_tokens,
                                                           batch_size=batch_size)])
        got = torch.cat([p for _, p in task.probabilities(model, tokenizer, examples, max_len=model.input_tokens,
                                                          batch_size=batch_size, compiled=compiled)])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert want[:, 0].std() > 0.05  # the texts get different answers, so agreeing means something


def test_a_package_for_other_weights_is_not_used(compiled_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "classifier"
    shutil.copytree(compiled_dir, stale)
    model, tokenizer, _ = load_model_dir(stale)
    with torch.no_grad():
        model.heads["classify"].proj.bias.add_(1.0)
    save_file(tensors_for_saving(model.state_dict()), str(stale / "model.safetensors"))  # weights swapped by hand
    assert all(package_path(stale, "classify", kind).exists() for kind in KINDS)
    with pytest.warns(UserWarning, match="built for another weights"):
        assert load_compiled(stale, "classify") is None
    save_model_dir(stale, model, tokenizer)  # saving the model again drops the package
    assert load_compiled(stale, "classify") is None


def predict(model_dir: Path, config_home: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmcraft", "predict", str(model_dir), "今天天气很好", *flags],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "XDG_CONFIG_HOME": str(config_home)})


def test_predict_uses_the_package_built_here(compiled_dir: Path, config_home: Path) -> None:
    assert (config_home / "lmcraft" / "trusted-packages.json").exists()
    run = predict(compiled_dir, config_home)
    assert "using the compiled package of head 'classify'" in run.stderr
    assert '"label"' in run.stdout


def test_predict_runs_someone_elses_package_only_with_compiled(compiled_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "another-user"  # a machine or user that did not build the package
    run = predict(compiled_dir, elsewhere)
    assert "using the compiled package" not in run.stderr and "not built by `lmcraft compile`" in run.stderr
    assert '"label"' in run.stdout
    assert "using the compiled package of head 'classify'" in predict(compiled_dir, elsewhere, "--compiled").stderr

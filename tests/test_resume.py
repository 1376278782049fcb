"""Exact resume: a run stopped at any moment (SIGKILL, Ctrl-C) and resumed ends with the weights, bit for
bit, of a run that never stopped. Also: which checkpoints are kept, damaged ones skipped, and the
checkpoint left behind when losses turn NaN."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmcraft.cli import main
from lmcraft.config import TrainConfig
from lmcraft.data.builtin import prepare
from lmcraft.data.readers import write_jsonl
from lmcraft.model.heads import Model
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.checkpoint import latest_checkpoint, list_checkpoints
from lmcraft.train.errors import NonFiniteLossError
from lmcraft.train.loop import train
from tests.conftest import tiny_config
from tests.test_training import ExplodingTask, ScriptedTask, classify_items

pytestmark = pytest.mark.slow


def lmcraft_process(args: list[str], **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmcraft", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


def run_to_end(args: list[str]) -> subprocess.CompletedProcess:
    p = lmcraft_process(args)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def stop_at_step(args: list[str], run_dir: Path, step: int, sig: int) -> subprocess.CompletedProcess:
    """Start a run and send ``sig`` once a checkpoint of ``step`` or later exists."""
    p = lmcraft_process(args)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if any(s >= step for s, _ in list_checkpoints(run_dir)):
            p.send_signal(sig)
            break
        time.sleep(0.005)
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def dev_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in map(json.loads, lines) if r["split"] == "dev"]


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory: pytest.TempPathFactory, peoples_daily: Path, sentiment_dir: Path,
                 zh_tokenizer: TextTokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:400]) + "\n",
                      encoding="utf-8")
    zh_tokenizer.save(root / "tok")
    labelled = root / "labelled"
    for split, n in (("train", 480), ("dev", 96), ("test", 64)):
        rows = [json.loads(line) for line in (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8")
                .splitlines()[:n]]
        write_jsonl(labelled / f"{split}.jsonl", rows)
    return {"corpus": corpus, "tokenizer": root / "tok", "labelled": labelled}


def test_sigkill_at_a_random_step_then_resume_gives_identical_weights(small_inputs: dict, tmp_path: Path) -> None:
    """MLM pretraining (dropout, random masking, shuffled data) killed with SIGKILL at a random step."""
    steps = 40
    kill_at = random.Random().randint(3, steps - 8)

    def args(out: Path) -> list[str]:
        return ["pretrain", "--corpus", str(small_inputs["corpus"]), "--tokenizer", str(small_inputs["tokenizer"]),
                "--out", str(out), "--size", "tiny", "--max-len", "32", "--batch-size", "8",
                "--max-steps", str(steps), "--eval-every", "10", "--save-every", "1", "--bf16", "off",
                "--no-progress"]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_to_end(args(whole))
    killed = stop_at_step(args(broken), broken, kill_at, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}: {killed.stderr[-500:]}"
    survivor = latest_checkpoint(broken)
    assert survivor is not None and survivor.state["step"] < steps
    resumed = run_to_end([*args(broken), "--resume"])
    assert f"resuming from {survivor.path}" in resumed.stderr
    final = f"checkpoints/step-{steps:08d}"
    assert_bit_identical(whole / final, broken / final)
    assert_bit_identical(whole / "best", broken / "best")
    assert dev_records(whole) == dev_records(broken), f"killed at step {kill_at}"
    assert any((broken / "tensorboard").iterdir()), "TensorBoard event files are written"


def test_ctrl_c_saves_a_checkpoint_and_resume_gives_identical_weights(small_inputs: dict, tmp_path: Path) -> None:
    """Fine-tuning (shuffled batches whose padding the model skips, dropout) interrupted with SIGINT, as
    Ctrl-C would."""
    steps = 30

    def args(out: Path) -> list[str]:
        return ["finetune", "--data", str(small_inputs["labelled"]), "--tokenizer", str(small_inputs["tokenizer"]),
                "--out", str(out), "--size", "tiny", "--max-len", "48", "--batch-size", "16",
                "--max-steps", str(steps), "--eval-every", "10", "--save-every", "10", "--bf16", "off",
                "--no-progress"]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_to_end(args(whole))
    stopped = stop_at_step(args(broken), broken, 10, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "continue with --resume" in stopped.stderr
    saved = latest_checkpoint(broken)
    assert saved is not None and 10 < saved.state["step"] < steps, "Ctrl-C wrote a checkpoint of its own"
    run_to_end([*args(broken), "--resume"])
    assert_bit_identical(whole / f"checkpoints/step-{steps:08d}", broken / f"checkpoints/step-{steps:08d}")
    assert dev_records(whole) == dev_records(broken)


def test_an_ngram_tagger_resumes_exactly(tmp_path: Path, zh_tokenizer_dir: Path) -> None:
    """A CRF tagger with a sparse n-gram table (plain SGD beside AdamW, left out of clipping) interrupted
    with SIGINT and resumed ends with the same weights as a run that was never stopped."""
    data = tmp_path / "ner"
    prepare("peoples-daily-ner", tmp_path / "full")
    for split, n in (("train", 300), ("dev", 60)):
        lines = (tmp_path / "full" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        write_jsonl(data / f"{split}.jsonl", [json.loads(line) for line in lines])
    steps = 30

    def args(out: Path) -> list[str]:
        return ["finetune", "--task", "tag", "--crf", "--ngrams", "4096", "--data", str(data), "--tokenizer",
                str(zh_tokenizer_dir), "--out", str(out), "--size", "tiny", "--max-len", "64", "--batch-size", "8",
                "--max-steps", str(steps), "--eval-every", "10", "--save-every", "10", "--bf16", "off",
                "--no-progress", "--no-baseline"]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_to_end(args(whole))
    stopped = stop_at_step(args(broken), broken, 10, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    run_to_end([*args(broken), "--resume"])
    final = f"checkpoints/step-{steps:08d}"
    assert_bit_identical(whole / final, broken / final)
    table = weights(whole / final)["heads.tag.ngrams.table.weight"]
    assert table.abs().sum() > 0  # the table starts at zero: it learned
    assert dev_records(whole) == dev_records(broken)


def test_resume_refuses_a_different_batch_size(small_inputs: dict, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base = ["finetune", "--data", str(small_inputs["labelled"]), "--tokenizer", str(small_inputs["tokenizer"]),
            "--out", str(tmp_path), "--size", "tiny", "--max-len", "32", "--max-steps", "4", "--eval-every", "2",
            "--no-progress", "--no-tensorboard"]
    assert main([*base, "--batch-size", "16"]) == 0
    assert main([*base, "--batch-size", "8", "--resume"]) == 2
    assert "cannot resume with batch_size=8; the run started with batch_size=16" in capsys.readouterr().err


def _loop(tmp_path: Path, **overrides: object) -> tuple[Model, TrainConfig]:
    task = ScriptedTask([0.5, 0.9, 0.6, 0.7, 0.8, 0.7, 0.6, 0.5])
    model = Model(tiny_config(), {task.head: task.head_spec()})
    cfg = TrainConfig(**{"batch_size": 4, "max_steps": 16, "eval_every": 2, "patience": 0, "progress": False,
                         "save_every": 1, "keep_checkpoints": 2, "tensorboard": False, "bf16": "off",
                         **overrides})
    train(model, task, classify_items(64), classify_items(8), cfg, run_dir=tmp_path, save_best=lambda p, s: None)
    return model, cfg


def test_keeps_the_last_k_checkpoints_and_the_best(tmp_path: Path) -> None:
    _loop(tmp_path)
    # dev metric 0.9 at step 4 is the best; checkpoints after every step, the newest two kept
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 15, 16]


def test_resume_skips_half_written_and_damaged_checkpoints(tmp_path: Path) -> None:
    _loop(tmp_path)
    root = tmp_path / "checkpoints"
    (root / ".step-00000017.abcd").mkdir()  # a staging directory left by a crash
    (root / ".step-00000017.abcd" / "state.json").write_text("{", encoding="utf-8")
    damaged = root / "step-00000016" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    found = latest_checkpoint(tmp_path)
    assert found is not None and found.state["step"] == 15


def test_nan_losses_stop_with_a_clear_error_and_a_loadable_checkpoint(tmp_path: Path) -> None:
    task = ExplodingTask(["a", "b"], pad_id=0)
    model = Model(tiny_config(), {task.head: task.head_spec()})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(batch_size=4, max_steps=50, max_bad_steps=3, progress=False, tensorboard=False)
    with pytest.raises(NonFiniteLossError, match=r"3 steps in a row.*last good state is in .*step-00000000"):
        train(model, task, classify_items(64), classify_items(8), cfg, run_dir=tmp_path, save_best=lambda p, s: None)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.state["step"] == 0 and ckpt.state["loop"]["bad_steps"] == 3
    reloaded = Model(tiny_config(), {task.head: task.head_spec()})
    reloaded.load_state_dict(ckpt.model)
    for k, v in reloaded.state_dict().items():  # no update was made with NaN gradients
        assert torch.equal(v, before[k]), k

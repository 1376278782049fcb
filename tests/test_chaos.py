"""Chaos: a tiny training run is killed with SIGKILL again and again, at random moments and while it writes a
checkpoint, and resumed with ``resume=True`` each time; its final weights are bit-identical to those of a
run that was never interrupted. The run trains in a subprocess that imports only the loop (no command line,
no scikit-learn), so that each restart costs little more than importing torch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmcraft.config import TrainConfig
from lmcraft.fsutil import staged_dir
from lmcraft.model.heads import Model
from lmcraft.tasks.classify.task import Classify
from lmcraft.train.checkpoint import latest_checkpoint, list_checkpoints
from lmcraft.train.loop import train
from tests.conftest import tiny_config
from tests.test_training import classify_items

pytestmark = pytest.mark.slow
STEPS = 24
ROOT = Path(__file__).resolve().parent.parent


class ConstantMetricTask(Classify):
    """Classification whose dev metric is a constant: evaluation costs nothing and needs no scikit-learn."""

    def new_metrics(self):
        class Constant:
            def update(self, model: Model, batch: dict) -> None:
                pass

            def compute(self) -> dict[str, float]:
                return {"accuracy": 0.5, "macro_f1": 0.5, "loss": 0.5}

        return Constant()


def run(out: str, bf16: str) -> None:
    """The run under test: dropout on (its RNG state must come back), a checkpoint after every step, the best
    model written through a staging folder as the real one is."""
    torch.set_num_threads(1)
    task = ConstantMetricTask(["a", "b"], pad_id=0)
    torch.manual_seed(0)
    model = Model(tiny_config(dropout=0.1), {task.head: task.head_spec()})
    cfg = TrainConfig(batch_size=4, max_steps=STEPS, eval_every=8, patience=0, progress=False, save_every=1,
                      keep_checkpoints=2, tensorboard=False, bf16=bf16, lr=1e-3, resume=True)

    def save_best(path: Path, state: dict) -> None:
        with staged_dir(path) as staging:
            save_file({k: v.contiguous() for k, v in state.items()}, str(staging / "model.safetensors"))

    train(model, task, classify_items(64), classify_items(8), cfg, run_dir=out, save_best=save_best)


def start(out: Path, bf16: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = f"from tests.test_chaos import run; run({str(out)!r}, {bf16!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def newest_step(out: Path) -> int:
    found = list_checkpoints(out)
    return found[-1][0] if found else -1


def kill_while(p: subprocess.Popen, out: Path, moment: str, rng: random.Random) -> bool:
    """Once the run has saved a step beyond the one it resumed from, SIGKILL it: while a checkpoint is being
    staged (``moment="write"``) or after a random delay (``"random"``). False if it finished first."""
    before = newest_step(out)
    deadline = time.time() + 120
    while p.poll() is None and newest_step(out) <= before and time.time() < deadline:
        time.sleep(0.002)
    if moment == "random":
        time.sleep(rng.uniform(0.0, 0.1))  # a step takes milliseconds: a longer delay may outlast the run
    else:
        while p.poll() is None and not any(e.name.startswith(".step-") for e in (out / "checkpoints").iterdir()):
            time.sleep(0.0005)
    if p.poll() is not None:
        return False
    p.send_signal(signal.SIGKILL)
    if os.environ.get("CHAOS_VERBOSE"):
        staged = [e.name for e in (out / "checkpoints").iterdir() if e.name.startswith(".")]
        print(f"killed ({moment}) after step {newest_step(out)}; staging: {staged}")
    p.wait(timeout=60)
    return True


@pytest.mark.parametrize(("bf16", "moments"), [
    ("off", ["write", "random", "write", "random"]),
    ("on", ["write"]),  # bf16 forced on: on CPUs without native bf16 it is emulated, and slow
])
def test_killed_again_and_again_then_resumed_gives_identical_weights(tmp_path: Path, bf16: str,
                                                                     moments: list[str]) -> None:
    whole, chaos = tmp_path / "whole", tmp_path / "chaos"
    reference = start(whole, bf16)
    rng = random.Random()
    kills = 0
    for moment in moments:
        if not kill_while(start(chaos, bf16), chaos, moment, rng):
            break  # the run reached its last step before the moment came: nothing is left to interrupt
        kills += 1
        ckpt = latest_checkpoint(chaos)  # what a resume would pick is whole and verified
        assert ckpt is None or ckpt.state["step"] < STEPS
    last = start(chaos, bf16)
    _, err = last.communicate(timeout=300)
    assert last.returncode == 0, err[-3000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert kills >= len(moments) - 2, f"killed {kills} times"
    final = f"checkpoints/step-{STEPS:08d}/model.safetensors"
    a, b = load_file(str(whole / final)), load_file(str(chaos / final))
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after {kills} kills, e.g. {different[:3]}"
    assert not [p for p in chaos.rglob(".*") if p.is_dir()], "no staging folder left behind"

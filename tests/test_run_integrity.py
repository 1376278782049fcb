"""No silent data loss: damaged checkpoints are skipped, a resume with other options or data is refused, the
run directory is locked, SIGTERM saves a checkpoint, a full disk stops with one clear line, and what a
crashed run left behind is cleaned up. Tiny in-process runs (a 2-layer, width-32 model), in fp32."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from lmcraft.config import TrainConfig
from lmcraft.fsutil import directory_lock, sha256_of
from lmcraft.model.heads import Model
from lmcraft.runcard import trained_dtype, write_run_card
from lmcraft.tasks.classify.task import Classify
from lmcraft.train import checkpoint
from lmcraft.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from lmcraft.train.errors import (
    DiskFullError,
    NonFiniteLossError,
    ResumeMismatchError,
    RunLockedError,
    TrainingError,
)
from lmcraft.train.identity import data_fingerprint
from lmcraft.train.loop import TrainResult, train
from tests.conftest import tiny_config
from tests.test_training import classify_items


def run(tmp_path: Path, task: Classify | None = None, items: list | None = None,
        **overrides: object) -> tuple[Model, TrainResult]:
    """8 steps of batch 4 over 32 items, a checkpoint after every step (the newest two kept), in fp32."""
    task = task or Classify(["a", "b"], pad_id=0)
    torch.manual_seed(0)
    model = Model(tiny_config(), {task.head: task.head_spec()})
    cfg = TrainConfig(**{"batch_size": 4, "max_steps": 8, "eval_every": 4, "patience": 0, "progress": False,
                         "save_every": 1, "keep_checkpoints": 2, "tensorboard": False, "bf16": "off", "lr": 1e-3,
                         **overrides})
    result = train(model, task, items or classify_items(32), classify_items(8), cfg, run_dir=tmp_path,
                   save_best=lambda p, s: None)
    return model, result


def reseal(ckpt: Path) -> None:
    """Rewrite a checkpoint's manifest after an edit, as a file that was written so would have."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        entry.update(bytes=(ckpt / name).stat().st_size, sha256=sha256_of(ckpt / name))
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
def test_overwritten_bytes_in_a_checkpoint_fall_back_to_the_previous_one(
        tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path)
    newest = tmp_path / "checkpoints" / "step-00000008"
    data = bytearray((newest / name).read_bytes())
    at = len(data) // 8
    data[at : at + 65536] = os.urandom(len(data[at : at + 65536]))  # a block overwritten, the size unchanged
    (newest / name).write_bytes(bytes(data))
    capsys.readouterr()
    found = latest_checkpoint(tmp_path)
    assert found is not None and found.state["step"] == 7
    err = capsys.readouterr().err.strip()
    assert err == f"lmcraft: skipping checkpoint {newest}: damaged: {name} does not match its SHA-256"


def test_a_checkpoint_with_missing_state_keys_falls_back_to_the_previous_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path)
    newest = tmp_path / "checkpoints" / "step-00000008"
    state = json.loads((newest / "state.json").read_text())
    del state["loop"]["next_batch"], state["stopper"]
    (newest / "state.json").write_text(json.dumps(state))
    reseal(newest)
    _, result = run(tmp_path, resume=True)
    assert result.steps == 8
    err = capsys.readouterr().err
    assert f"skipping checkpoint {newest}: state.json lacks stopper" in err
    assert "resuming from " + str(tmp_path / "checkpoints" / "step-00000007") in err


def test_resume_with_no_usable_checkpoint_stops_and_deletes_nothing(tmp_path: Path) -> None:
    run(tmp_path, max_steps=2)
    for _, path in list_checkpoints(tmp_path):
        (path / "manifest.json").unlink()  # as written before manifests existed, or cut short
    with pytest.raises(TrainingError, match=r"none of the checkpoints in .* can be resumed"):
        run(tmp_path, max_steps=2, resume=True)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]


def test_a_checkpoint_with_nan_weights_is_never_resumed_from(tmp_path: Path) -> None:
    run(tmp_path)
    newest = tmp_path / "checkpoints" / "step-00000008"
    from safetensors.torch import load_file, save_file

    weights = load_file(str(newest / "model.safetensors"))
    next(iter(weights.values()))[0] = float("nan")
    save_file(weights, str(newest / "model.safetensors"))
    reseal(newest)
    with pytest.raises(ValueError, match="non-finite weights"):
        load_checkpoint(newest)
    assert latest_checkpoint(tmp_path).state["step"] == 7


class PoisonedTask(Classify):
    """Sets one weight to NaN during the forward of the given call (as an overflow would)."""

    def __init__(self, at_call: int) -> None:
        super().__init__(["a", "b"], pad_id=0)
        self.calls, self.at_call = 0, at_call

    def loss_sum(self, model: Model, batch: dict) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at_call:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
        return super().loss_sum(model, batch)


def test_the_nan_guard_names_a_checkpoint_whose_weights_are_finite(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"last good state is in .*step-00000005$"):
        run(tmp_path, task=PoisonedTask(at_call=6), max_bad_steps=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5], "no checkpoint of the NaN weights"
    assert latest_checkpoint(tmp_path).state["step"] == 5


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": 2e-3}, "cannot resume with lr=0.002; the run started with lr=0.001"),
    ({"max_steps": 20}, "cannot resume with max_steps=20; the run started with max_steps=8"),
    ({"batch_size": 8}, "cannot resume with batch_size=8; the run started with batch_size=4"),
])
def test_resume_refuses_changed_options(tmp_path: Path, change: dict, message: str) -> None:
    run(tmp_path)
    with pytest.raises(ResumeMismatchError, match=message + r".*--resume-anyway"):
        run(tmp_path, resume=True, **change)


def test_resume_refuses_changed_training_data(tmp_path: Path) -> None:
    run(tmp_path)
    items = classify_items(32)
    items[10].ids[1] += 1  # one token of one item
    with pytest.raises(ResumeMismatchError, match="cannot resume with training data of 32 items"):
        run(tmp_path, items=items, resume=True)


def test_options_that_do_not_change_the_weights_may_change_on_resume(tmp_path: Path) -> None:
    run(tmp_path)
    _, result = run(tmp_path, resume=True, log_every=3, eval_batch_size=2, save_every=5, keep_checkpoints=4)
    assert result.steps == 8


def test_resume_anyway_continues_with_the_new_learning_rate(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, max_steps=4, warmup_ratio=0.0)
    ckpt = latest_checkpoint(tmp_path)
    _, result = run(tmp_path, resume=True, resume_anyway=True, max_steps=6, lr=2e-3, warmup_ratio=0.0, log_every=1)
    assert result.steps == 6
    err = capsys.readouterr().err
    assert "resuming anyway (--resume-anyway) although: cannot resume with lr=0.002" in err
    assert ckpt is not None and ckpt.state["step"] == 4
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lr[5] == pytest.approx(2e-3 * (6 - 5) / 6), "from 2e-3 down to 0 at the new 6 steps"


def test_a_second_run_into_a_locked_directory_stops_at_once(tmp_path: Path) -> None:
    with directory_lock(tmp_path), pytest.raises(RunLockedError, match=f"{tmp_path} is in use by another "
                                                                       f"training run .held by process {os.getpid()}"):
        run(tmp_path)
    assert not (tmp_path / "checkpoints").exists(), "it wrote nothing"
    run(tmp_path, max_steps=1)  # released: a run after it goes ahead


class SigtermTask(Classify):
    """Sends this process SIGTERM during the forward of the given call, as a scheduler would."""

    def __init__(self, at_call: int) -> None:
        super().__init__(["a", "b"], pad_id=0)
        self.calls, self.at_call = 0, at_call

    def loss_sum(self, model: Model, batch: dict) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss_sum(model, batch)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_exact(tmp_path: Path) -> None:
    whole, _ = run(tmp_path / "whole", save_every=100)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted at step 6; .*continue with --resume"):
        run(tmp_path / "broken", task=SigtermTask(at_call=6), save_every=100)
    assert [s for s, _ in list_checkpoints(tmp_path / "broken")] == [6], "saved on SIGTERM, not before"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is put back"
    resumed, _ = run(tmp_path / "broken", resume=True, save_every=100)
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_a_full_disk_gives_one_line_and_leaves_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(tmp_path, max_steps=4)
    real_save = torch.save

    class FullDisk(io.RawIOBase):
        """A file on a disk with 1,000 bytes left."""

        def __init__(self, f: io.BufferedWriter) -> None:
            self.f, self.left = f, 1000

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:
            if len(b) > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(b)
            return self.f.write(b)

    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f: real_save(obj, FullDisk(f)))
    with pytest.raises(DiskFullError) as caught:
        run(tmp_path, max_steps=6, resume=True, resume_anyway=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no space left on /") and message.endswith(" is intact. Free some space and continue "
                                                                          "with --resume")
    assert f"while writing checkpoint {tmp_path / 'checkpoints' / 'step-00000005'}; the previous checkpoint " \
           f"{tmp_path / 'checkpoints' / 'step-00000004'} is intact" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"], \
        "no staging folder left"
    load_checkpoint(tmp_path / "checkpoints" / "step-00000004")


def test_staging_folders_of_a_crashed_run_are_cleaned_at_start(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, max_steps=2)
    (tmp_path / "checkpoints" / ".step-00000003.k2j4x9").mkdir()
    (tmp_path / "checkpoints" / ".step-00000003.k2j4x9" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".best.a8d7f1").mkdir()
    (tmp_path / ".best.old").mkdir()  # a crash between the two renames: the previous best, and no best/
    _, result = run(tmp_path, max_steps=3, resume=True, resume_anyway=True)
    assert result.steps == 3
    assert not [p for p in tmp_path.rglob(".*") if p.is_dir()], "no hidden folder left"
    assert (tmp_path / "best").is_dir(), "the previous best model was put back"
    assert "removed 2 staging folder(s) left by an interrupted run" in capsys.readouterr().err


def test_the_data_fingerprint_sees_one_changed_token() -> None:
    items = classify_items(16)
    assert data_fingerprint(items) == data_fingerprint(classify_items(16))
    items[3].ids[2] += 1
    assert data_fingerprint(items) != data_fingerprint(classify_items(16))
    blocks = [torch.arange(8), [1, 2, 3], (1, 2, 3), {"ids": [1, 2]}]
    assert data_fingerprint(blocks) == data_fingerprint([torch.arange(8), [1, 2, 3], (1, 2, 3), {"ids": [1, 2]}])
    assert data_fingerprint([[1, 2, 3]]) != data_fingerprint([(1, 2, 3)])


def test_the_run_card_records_the_dtype_trained_in(tmp_path: Path) -> None:
    _, result = run(tmp_path, max_steps=1)
    assert result.dtype == "fp32"
    assert trained_dtype({"train": {"bf16": "off"}}) == "fp32"
    assert trained_dtype({"train": {"bf16": "on"}}) == "bf16"
    assert trained_dtype({"train": {"bf16": "auto"}}) in ("bf16", "fp32")
    card = write_run_card(tmp_path, stage="finetune", config={"train": {"bf16": "auto"}}, data=[], seed=0,
                          wall_time_s={}, metrics={})
    assert card["dtype"] in ("bf16", "fp32")
    assert write_run_card(tmp_path, stage="finetune", config={"train": {"bf16": "auto"}}, data=[], seed=0,
                          wall_time_s={}, metrics={}, dtype="bf16")["dtype"] == "bf16"

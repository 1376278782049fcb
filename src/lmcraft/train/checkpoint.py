"""Checkpoints that resume a run exactly.

``RUN/checkpoints/step-00000120/`` holds everything the loop's future depends on:

- ``model.safetensors``: the weights;
- ``trainer.pt``: optimizer and schedule state and every rank's RNG states (tensors only, read back with
  ``torch.load(weights_only=True)``);
- ``state.json``: step, epoch, position within the epoch, early-stopping state, dev history, and what the
  run is (train/identity.py: the options that must not change on resume, a fingerprint of the data);
- ``manifest.json``: the size and SHA-256 of each of the three, written last.

A checkpoint is staged under a hidden name, fsynced and renamed into place, so the newest visible one is
always whole; the manifest catches what happens to it afterwards (a bad disk sector, an overwritten block,
a copy cut short). Loading verifies every file against it, and that every weight is finite, so that a
damaged checkpoint, or one with NaN weights, is skipped for the one before. The last ``keep`` are kept,
plus the one of the best dev evaluation.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from lmcraft.fsutil import sha256_of, staged_dir, write_json
from lmcraft.model.io import tensors_for_saving

PATTERN = re.compile(r"^step-(\d{8})$")
FILES = ("model.safetensors", "trainer.pt", "state.json")
MANIFEST = "manifest.json"
STATE_KEYS = ("step", "loop", "stopper", "world_size", "config", "run")


@dataclass
class Checkpoint:
    path: Path
    model: dict[str, torch.Tensor]
    trainer: dict[str, Any]  # optimizer, schedule, rng (one entry per rank)
    state: dict[str, Any]


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the visible checkpoints, oldest first; staging directories are not listed."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := PATTERN.match(p.name)) and p.is_dir()]
    return sorted(found)


def save_checkpoint(
    run_dir: Path, step: int, *, model: dict[str, torch.Tensor], trainer: dict[str, Any], state: dict[str, Any],
    keep: int, best_step: int | None,
) -> Path:
    """Write one checkpoint atomically, then delete the old ones beyond the newest ``keep`` (and the best).

    Both tensor files are written through Python's own file objects, so that a full disk raises ``OSError``
    (ENOSPC) rather than torch's "unexpected pos"; the staging directory is removed on any error.
    """
    path = checkpoint_dir(run_dir, step)
    with staged_dir(path, durable=True) as staging:
        with (staging / "model.safetensors").open("wb") as f:
            f.write(save(tensors_for_saving(model)))
        with (staging / "trainer.pt").open("wb") as f:
            torch.save(trainer, f)
        write_json(staging / "state.json", {"step": step, **state})
        write_json(staging / MANIFEST, {"files": {name: {"bytes": (staging / name).stat().st_size,
                                                         "sha256": sha256_of(staging / name)} for name in FILES}})
    visible = list_checkpoints(run_dir)
    keep_steps = {s for s, _ in visible[-keep:]} | ({best_step} if best_step is not None else set())
    for s, p in visible:
        if s not in keep_steps:
            shutil.rmtree(p, ignore_errors=True)
    return path


def verify_files(path: Path) -> None:
    """Raise ``ValueError`` unless every file of the checkpoint matches its manifest's size and SHA-256."""
    if not (path / MANIFEST).exists():
        raise ValueError(f"incomplete: no {MANIFEST}")
    listed = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
    for name in FILES:
        if name not in listed or not (path / name).exists():
            raise ValueError(f"incomplete: {name} missing")
        if (path / name).stat().st_size != listed[name]["bytes"]:
            raise ValueError(f"damaged: {name} has {(path / name).stat().st_size} bytes, not {listed[name]['bytes']}")
        if sha256_of(path / name) != listed[name]["sha256"]:
            raise ValueError(f"damaged: {name} does not match its SHA-256")


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint after verifying its files, its state's keys and its weights' finiteness; raise
    ``ValueError`` saying what is wrong otherwise."""
    verify_files(path)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"state.json lacks {', '.join(missing)}")
    model = load((path / "model.safetensors").read_bytes())
    if bad := non_finite(model):
        raise ValueError(f"non-finite weights in {len(bad)} tensor(s), e.g. {bad[0]}")
    trainer = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
    return Checkpoint(path=path, model=model, trainer=trainer, state=state)


def latest_checkpoint(run_dir: Path, accept: Callable[[Checkpoint], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that loads (and that ``accept`` does not reject with a ``ValueError``,
    ``KeyError`` or ``TypeError``); a damaged one is reported in one line and skipped for the one before."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            ckpt = load_checkpoint(path)
            if accept is not None:
                accept(ckpt)
            return ckpt
        except Exception as e:  # a damaged file may fail in json, safetensors or torch.load
            print(f"lmcraft: skipping checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                  file=sys.stderr)
    return None


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """This process's random state: the global torch RNG (dropout), the collation generator (masking),
    and CUDA's when present."""
    state = {"torch": torch.get_rng_state(), "collate": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["collate"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ---------------------------------------------------------------------------------------------------------
# Whole (unsharded) states. Under FSDP each rank holds a shard; these gather the full tensors on rank 0
# (every rank must call them) and load full tensors back into the shards.


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state(model: torch.nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict[str, Any]:
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_states(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: Checkpoint, sharded: bool) -> None:
    """Put a checkpoint's weights and optimizer state back (into the shards, under FSDP)."""
    if not sharded:
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.trainer["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, ckpt.model, options=options)
    set_optimizer_state_dict(model, optimizer, ckpt.trainer["optimizer"], options=options)

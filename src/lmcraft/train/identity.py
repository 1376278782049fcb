"""What a run is: the options that decide its trajectory and a fingerprint of its training data.

A checkpoint stores both (``state.json``, key ``run``); ``--resume`` compares them with the resumed run's
and stops, naming what changed, unless ``--resume-anyway``. Progress bars, logging, evaluation batch size,
checkpoint frequency and time limits do not change the weights a run reaches, so they may change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lmcraft.config import TrainConfig

# TrainConfig fields that change which weights the run reaches (or where it stops).
TRAJECTORY = ("lr", "weight_decay", "batch_size", "grad_accum", "max_steps", "epochs", "warmup_ratio", "clip",
              "seed", "eval_every", "patience", "length_buckets", "compile")
SAMPLED_ITEMS = 100_000  # a larger training set is fingerprinted by this many items, evenly spaced


def run_identity(cfg: TrainConfig, *, dtype: str, world: int, items: Sequence[Any]) -> dict[str, Any]:
    """The options and data that a resumed run must share with the run it continues."""
    options: dict[str, Any] = {name: getattr(cfg, name) for name in TRAJECTORY}
    options["dtype"] = dtype  # what bf16=auto resolved to on this machine
    if cfg.budget:  # only when set, so that checkpoints of runs without one still match
        options["budget"] = cfg.budget
    if world > 1:
        options["distributed"] = cfg.distributed
    text = json.dumps(options, sort_keys=True)
    return {"options": options, "options_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "data": {"items": len(items), "sha256": data_fingerprint(items)}}


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between two identities, one phrase each (empty when none)."""
    found = []
    if saved["options_sha256"] != now["options_sha256"]:
        for name in sorted(set(saved["options"]) | set(now["options"])):
            old, new = saved["options"].get(name), now["options"].get(name)
            if old != new:
                found.append(f"{name}={new}; the run started with {name}={old}")
    if saved["data"] != now["data"]:
        found.append(f"training data of {now['data']['items']} items (fingerprint {now['data']['sha256'][:12]}); "
                     f"the run started with {saved['data']['items']} items (fingerprint "
                     f"{saved['data']['sha256'][:12]})")
    return found


def data_fingerprint(items: Sequence[Any]) -> str:
    """SHA-256 over the training items' contents (token ids, labels, ...): all of them up to
    ``SAMPLED_ITEMS``, else as many at evenly spaced positions, plus the count. Token lists hash as
    machine arrays, so a million blocks take about a second."""
    h = hashlib.sha256(f"{len(items)}\n".encode())
    n = len(items)
    positions = range(n) if n <= SAMPLED_ITEMS else (i * n // SAMPLED_ITEMS for i in range(SAMPLED_ITEMS))
    for i in positions:
        _feed(h, items[i])
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` into the hash, tagged by kind, so that [1, 2] and (1, 2) or "1" and 1 differ."""
    if obj is None or isinstance(obj, bool | int | float | str):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, bytes):
        h.update(b"bytes:%d;" % len(obj) + obj)
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__}:{len(obj)};".encode())
        if obj and type(obj[0]) is int:
            try:
                h.update(array("q", obj).tobytes())  # all ints: one C call
                return
            except (TypeError, OverflowError):
                pass
        for x in obj:
            _feed(h, x)
    elif isinstance(obj, dict):
        h.update(f"dict:{len(obj)};".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, torch.Tensor | np.ndarray):
        a = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        h.update(f"array:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif dataclasses.is_dataclass(obj):
        h.update(f"{type(obj).__name__}:".encode())
        for f in dataclasses.fields(obj):
            _feed(h, getattr(obj, f.name))
    elif hasattr(obj, "__dict__"):
        h.update(f"{type(obj).__name__}:".encode())
        _feed(h, vars(obj))
    else:  # not an address-bearing default repr: objects without __dict__ define their own
        h.update(f"{type(obj).__name__}:{obj!r};".encode())

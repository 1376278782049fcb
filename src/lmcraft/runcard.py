"""Run cards: what produced a model — config, data hashes, seed, dtype, package versions, wall times, metrics."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from lmcraft.fsutil import sha256_of, write_json
from lmcraft.train.precision import dtype_name, training_device, use_bf16

PACKAGES = ("lmcraft", "torch", "tokenizers", "safetensors", "numpy", "scikit-learn")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _data_hash(path: Path) -> str:
    """A file's SHA-256; for a directory of token shards, its manifest's (which lists every shard's)."""
    return sha256_of(path / "manifest.json" if path.is_dir() else path)


def trained_dtype(config: dict[str, Any]) -> str | None:
    """The dtype a run with this config trained in on this machine ("bf16" or "fp32"; ``bf16: auto``
    resolved as the loop resolves it), or None when the config has no ``bf16`` option."""
    train = config.get("train", config)
    if not isinstance(train, dict) or "bf16" not in train:
        return None
    return dtype_name(use_bf16(train["bf16"], training_device()))


def write_run_card(model_dir: str | Path, *, stage: str, config: dict[str, Any], data: list[str | Path],
                   seed: int, wall_time_s: dict[str, float], metrics: dict[str, Any],
                   parent: dict[str, Any] | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Write ``model_dir/run_card.json``. ``dtype`` is what training ran in (``TrainResult.dtype``); when
    not given it is resolved from the config's ``bf16`` setting, never left as "auto"."""
    card = {
        "stage": stage,
        "config": config,
        "data_sha256": {str(p): _data_hash(Path(p)) for p in data},
        "seed": seed,
        "dtype": dtype or trained_dtype(config),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "wall_time_s": {k: round(v, 2) for k, v in wall_time_s.items()},
        "metrics": metrics,
        "parent": parent,  # the card of the model this one started from, if any
    }
    write_json(Path(model_dir) / "run_card.json", card)
    return card

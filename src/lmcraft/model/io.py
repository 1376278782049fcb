"""Model directories: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` (+ ``run_card.json``).

A directory is written next to its final place and renamed into it, so a reader never sees a half-written
model, and an interrupted save leaves the previous model intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmcraft import __version__
from lmcraft.fsutil import staged_dir, write_json
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.checks import (
    ModelDirError,
    check_architecture,
    check_weight_shapes,
    load_error,
    read_json_object,
    weight_shapes,
)
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
    config = read_json_object(file)
    if config.get("format") != FORMAT:
        raise ModelDirError(file, f"not an lmcraft model directory (format {config.get('format')!r})")
    check_architecture(file, config.get("architecture"))
    if not isinstance(config.get("heads"), dict):
        raise ModelDirError(file, "'heads' must be an object")
    return config


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """The tokenizer of a model directory; a file the tokenizers library cannot read is one line naming it."""
    try:
        return TextTokenizer.load(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelDirError(Path(path) / "tokenizer.json", f"not a tokenizer lmcraft can read ({detail})") from None


def load_model_dir(path: str | Path, *, heads: bool = True) -> tuple[Model, TextTokenizer, dict[str, Any]]:
    """Rebuild the model of a model directory (lmcraft's, or a Hugging Face one, converted); returns
    (model, tokenizer, config). With ``heads=False`` only the backbone is loaded, for fine-tuning with a
    new head."""
    path = resolve_model_dir(path)
    if is_hf_dir(path):
        return load_hf_dir(path, heads=heads)
    config = read_config(path)  # sizes checked before anything is allocated
    arch = config["architecture"]
    weights = path / "model.safetensors"
    check_weight_shapes(weights, weight_shapes(weights), arch)  # from the header alone
    tokenizer = load_tokenizer(path)
    if tokenizer.vocab_size > arch["vocab_size"]:
        raise ModelDirError(path / "tokenizer.json", f"{tokenizer.vocab_size:,} tokens, more than config.json's "
                                                     f"vocab_size={arch['vocab_size']:,}")
    cfg = TransformerConfig(**arch)
    try:
        model = Model(cfg, config["heads"] if heads else {})
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(path / "config.json", f"bad 'heads': {e}") from None
    try:
        state = load_file(str(weights))
    except Exception as e:  # SafetensorError
        raise ModelDirError(weights, f"unreadable ({e})") from None
    if not heads:
        state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise load_error(weights, e) from None
    missing = [k for k in missing if not k.endswith("position_table")]
    if missing or unexpected:
        raise ModelDirError(weights, f"does not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.input_tokens = int(config.get("input_tokens", cfg.max_tokens))
    model.eval()
    return model, tokenizer, config


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Checks of a model directory before anything is built from it: a model directory may come from anyone.

``config.json`` must be valid JSON whose sizes are positive, divisible where the model needs it, and small
enough to build (each field in a sane range, the whole under ``MAX_PARAMETERS``), so that a typo such as
``d_model: 10000000`` is an error at once, not an allocation of hundreds of gigabytes. The weights' shapes
are read from the safetensors header alone and compared with the config before the model is built. Every
problem is a ``ModelDirError``: one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmcraft.model.transformer import TransformerConfig

MAX_PARAMETERS = 20_000_000_000
# The largest value each size may take: several times that of the largest open models, far below what
# would exhaust a machine by itself.
MAX_SIZE = {"vocab_size": 1 << 24, "n_layer": 1024, "d_model": 1 << 16, "n_head": 1024, "d_ff": 1 << 18,
            "max_len": 1 << 20, "n_segment": 1024, "n_kv_head": 1024, "head_dim": 1 << 12}
POSITIVE = ("vocab_size", "n_layer", "d_model", "n_head", "d_ff", "max_len")  # the others may be 0


class ModelDirError(ValueError):
    """A model directory that cannot be loaded: ``file: what is wrong`` on one line."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file = str(file)
        super().__init__(f"{file}: {' '.join(message.split())}")


def read_json_file(file: str | Path) -> Any:
    """The JSON of ``file``; invalid JSON is a ModelDirError naming the file, the line and the column."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ModelDirError(file, f"not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelDirError(file, f"invalid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise ModelDirError(file, f"invalid JSON: {str(e)[:200]}") from None


def read_json_object(file: str | Path) -> dict[str, Any]:
    data = read_json_file(file)
    if not isinstance(data, dict):
        raise ModelDirError(file, f"expected a JSON object, found {type(data).__name__}")
    return data


def _int(file: Path, arch: dict[str, Any], name: str, shown: str) -> int:
    value = arch.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelDirError(file, f"{shown} must be an integer, not {value!r}")
    least = 1 if name in POSITIVE else 0
    if not least <= value <= MAX_SIZE.get(name, value):
        bound = f"from {least} to {MAX_SIZE[name]:,}" if name in MAX_SIZE else f"at least {least}"
        raise ModelDirError(file, f"{shown}={value:,} is out of range (it must be {bound})")
    return value


def estimate_parameters(arch: dict[str, Any]) -> int:
    """Parameters of a Transformer with this architecture (an lmcraft ``TransformerConfig`` as a dict),
    counted from its sizes without building it."""
    d, n_head = arch["d_model"], arch["n_head"]
    dh = arch.get("head_dim") or d // n_head
    kv = arch.get("n_kv_head") or n_head
    attention = 2 * d * n_head * dh + 2 * d * kv * dh  # query and output; key and value
    ffn = (3 if arch.get("activation") == "swiglu" else 2) * d * arch["d_ff"]
    per_layer = attention * (2 if arch.get("cross_attention") else 1) + ffn
    embeddings = (2 * arch["vocab_size"] + arch["max_len"] + arch.get("n_segment", 0)) * d  # untied output too
    return arch["n_layer"] * per_layer + embeddings


def check_architecture(file: str | Path, arch: Any, names: dict[str, str] | None = None) -> None:
    """Sizes of an architecture (the keyword arguments of ``TransformerConfig``) that can be built: integers
    in range, d_model divisible into heads, under ``MAX_PARAMETERS``. ``names`` gives the fields' names in
    the file when they differ (a Hugging Face config's ``hidden_size``), for the messages."""
    file = Path(file)
    if not isinstance(arch, dict):
        raise ModelDirError(file, f"'architecture' must be an object, not {type(arch).__name__}")
    names = names or {}
    known = set(TransformerConfig.__dataclass_fields__)
    unknown = sorted(set(arch) - known)
    if unknown:
        raise ModelDirError(file, f"unknown architecture field(s) {', '.join(unknown)}")
    if "vocab_size" not in arch:
        raise ModelDirError(file, f"missing field {names.get('vocab_size', 'vocab_size')!r}")
    sizes = {name: _int(file, arch, name, names.get(name, name)) for name in MAX_SIZE if name in arch}
    d, n_head = sizes.get("d_model", 256), sizes.get("n_head", 4)
    if not sizes.get("head_dim") and d % n_head:
        raise ModelDirError(file, f"{names.get('d_model', 'd_model')}={d} does not divide into "
                                  f"{names.get('n_head', 'n_head')}={n_head} heads")
    if sizes.get("n_kv_head") and n_head % sizes["n_kv_head"]:
        raise ModelDirError(file, f"{names.get('n_head', 'n_head')}={n_head} is not a multiple of "
                                  f"{names.get('n_kv_head', 'n_kv_head')}={sizes['n_kv_head']}")
    pad = arch.get("pad_id", 0)
    if not isinstance(pad, int) or not 0 <= pad < arch["vocab_size"]:
        raise ModelDirError(file, f"pad_id={pad!r} is not a token id (0 to vocab_size - 1)")
    defaults = {"n_layer": 4, "d_model": 256, "n_head": 4, "d_ff": 1024, "max_len": 512}
    count = estimate_parameters({**defaults, **arch})
    if count > MAX_PARAMETERS:
        shown = ", ".join(f"{names.get(k, k)}={v:,}" for k, v in sizes.items() if k in defaults or k == "vocab_size")
        raise ModelDirError(file, f"these sizes ({shown}) make about {count / 1e9:,.0f} G parameters, more than the "
                                  f"{MAX_PARAMETERS / 1e9:.0f} G lmcraft builds; is a size mistyped?")


def weight_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the safetensors header alone (nothing is read into memory). A truncated or
    corrupted file is a ModelDirError."""
    from safetensors import safe_open

    file = Path(file)
    if not file.exists():
        raise ModelDirError(file, "no such file")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception) and OSError
        raise ModelDirError(file, f"not a whole safetensors file ({str(e).strip() or type(e).__name__}); was it cut "
                                  f"short while copying?") from None


def check_weight_shapes(file: str | Path, shapes: dict[str, tuple[int, ...]], arch: dict[str, Any],
                        prefix: str = "backbone.", config: str = "config.json") -> None:
    """The weights' shapes against the architecture: the token embedding is (vocab_size, d_model), and there
    are n_layer blocks."""
    embedding = shapes.get(f"{prefix}embed.token.weight")
    want = (arch["vocab_size"], arch.get("d_model", 256))
    if embedding is None:
        raise ModelDirError(file, f"holds no token embedding {prefix}embed.token.weight")
    if embedding != want:
        found = " × ".join(f"{n:,}" for n in embedding)
        raise ModelDirError(file, f"the token embedding is {found} but {config} says vocab_size × d_model = "
                                  f"{want[0]:,} × {want[1]:,}")
    blocks = {name[len(prefix) + 7:].split(".")[0] for name in shapes if name.startswith(f"{prefix}blocks.")}
    if len(blocks) != arch.get("n_layer", 4):
        raise ModelDirError(file, f"holds {len(blocks)} blocks but {config} says n_layer={arch.get('n_layer', 4)}")


def load_error(file: str | Path, error: Exception) -> ModelDirError:
    """One line for an error torch raised while putting the weights into the model (e.g. a size mismatch)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), lines[-1] if lines else type(error).__name__)
    return ModelDirError(file, f"does not fit config.json: {detail[:300]}")

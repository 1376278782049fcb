"""Ahead-of-time compiled classifiers: the encoder, its classification head and the softmax built into one
native library for this CPU with AOTInductor, so that a prediction runs without Python between operations.

At batch 1 a small encoder spends about a third of its eager time in Python and in the set-up of each
operation, not in arithmetic; the compiled package removes that time, fuses the element-wise operations
into the surrounding loops, and needs no compiling when it is loaded (docs/performance.md).

    lmcraft compile MODEL_DIR        # writes MODEL_DIR/compiled/<head>.one.pt2, <head>.batch.pt2, <head>.json

Two packages are built. One takes a single text and is autotuned (inductor's ``max_autotune`` with frozen
weights: it times inductor's own matrix kernels against MKL's and keeps the faster), which is what a server
answering one request at a time wants; measured here it is slower on large batches. The other, built
without autotuning, takes batches of any size.

A package is native code: loading it runs it. So a package is loaded only when asked for
(``lmcraft predict --compiled``, ``Predictor(compiled=True)``), or, without asking, when this user built it
on this machine: ``lmcraft compile`` records each package's SHA-256 in the user's own
``~/.config/lmcraft/trusted-packages.json`` (``$XDG_CONFIG_HOME/lmcraft/`` when set), and ``lmcraft
predict`` / ``lmcraft evaluate`` use a package whose hash is listed there. A model directory received from
someone else never runs its ``compiled/`` folder unless ``--compiled`` is given.

Either way the packages are used only when they were built from the model's current ``config.json`` and
weights, with this version of torch, for this CPU's instruction set; otherwise a warning says so and the
model runs as usual. Saving a model directory again removes its ``compiled/`` folder.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lmcraft.fsutil import sha256_of, write_json

SUBDIR = "compiled"
KINDS = ("one", "batch")  # a package for single texts, one for batches
Batch = dict[str, torch.Tensor]


def trust_file() -> Path:
    """The user's own list of packages built on this machine (SHA-256 -> path)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "lmcraft" / "trusted-packages.json"


def trusted_hashes() -> dict[str, str]:
    try:
        data = json.loads(trust_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    packages = data.get("packages") if isinstance(data, dict) else None
    return packages if isinstance(packages, dict) else {}


def trust(packages: list[Path]) -> None:
    """Record ``packages`` (just built here) as trusted: their hashes go into the user's ``trust_file()``."""
    file = trust_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json(file, {"packages": {**trusted_hashes(), **{sha256_of(p): str(p.resolve()) for p in packages}}})


def is_trusted(model_dir: str | Path, head: str) -> bool:
    """Whether every package of ``head`` is one this user built on this machine (its hash is recorded)."""
    known = trusted_hashes()
    return all(sha256_of(package_path(model_dir, head, kind)) in known for kind in KINDS)


def package_path(model_dir: str | Path, head: str, kind: str) -> Path:
    return Path(model_dir) / SUBDIR / f"{head}.{kind}.pt2"


def stamp_path(model_dir: str | Path, head: str) -> Path:
    return Path(model_dir) / SUBDIR / f"{head}.json"


def stamp_of(model_dir: str | Path, head: str) -> dict[str, str]:
    """What a package depends on: the head, the model's files, torch's version and the CPU's instruction set."""
    model_dir = Path(model_dir)
    return {"head": head, "config": sha256_of(model_dir / "config.json"),
            "weights": sha256_of(model_dir / "model.safetensors"), "torch": torch.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability()}


class Probabilities(nn.Module):
    """(input ids (B, T), padding mask (B, T) or None, segment ids (B, T) or None) -> class probabilities
    (B, C): what ``Classify.probabilities`` computes from a collated batch."""

    def __init__(self, model: nn.Module, task: object) -> None:  # a Model and its Classify task
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"input_ids": input_ids}
        if padding_mask is not None:
            batch["padding_mask"] = padding_mask
        if segment_ids is not None:
            batch["segment_ids"] = segment_ids
        return self.task.logits(self.model, batch).float().softmax(-1)  # type: ignore[attr-defined]


def export_probabilities(probabilities: Probabilities, *, one: bool, max_batch: int) -> tuple[object, list[str]]:
    """The exported program of ``probabilities`` and the names of its inputs: for one text, (1, T) token
    ids (and segment ids for a model with segments; a single text has no padding); for batches, (B, T) ids
    and padding mask (and segment ids)."""
    model = probabilities.model
    tokens = model.input_tokens  # type: ignore[attr-defined]
    example = torch.ones((1 if one else 2, min(8, tokens)), dtype=torch.long)  # values do not shape the graph
    token_dim = torch.export.Dim("tokens", min=1, max=tokens)
    dims = {1: token_dim} if one else {0: torch.export.Dim("batch", min=1, max=max_batch), 1: token_dim}
    inputs = {"input_ids": example}
    if not one:
        inputs["padding_mask"] = torch.ones_like(example)
    if model.cfg.n_segment:  # type: ignore[attr-defined]  (text pairs: segment 1 marks the second text)
        inputs["segment_ids"] = torch.zeros_like(example)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own deprecations, inside export
        program = torch.export.export(probabilities, (), kwargs=inputs,
                                      dynamic_shapes={name: dims for name in inputs})
    return program, list(inputs)


def compile_classifier(model_dir: str | Path, head: str | None = None, *, max_batch: int = 1024) -> list[Path]:
    """Build the packages of a classification head (the model's only one if ``head`` is None): one for a
    single text, one for batches of up to ``max_batch`` texts, each of 1 to the model's input length in
    tokens. Returns their paths."""
    from lmcraft.inference.predictor import task_for
    from lmcraft.model.io import load_model_dir, read_config

    model_dir = Path(model_dir)
    read_config(model_dir)  # a clear error for anything but an lmcraft model directory
    model, _, _ = load_model_dir(model_dir)
    task = task_for(model, head)
    if not task.compilable:
        raise ValueError(f"head {task.head!r} is a {task.name} head; `lmcraft compile` builds classification heads")
    probabilities = Probabilities(model, task).eval()
    stamp = stamp_path(model_dir, task.head)
    stamp.parent.mkdir(exist_ok=True)
    stamp.unlink(missing_ok=True)  # no moment where an old stamp vouches for a new package
    inputs, packages = {}, []
    for kind in KINDS:
        program, inputs[kind] = export_probabilities(probabilities, one=kind == "one", max_batch=max_batch)
        settings = {"max_autotune": True, "freezing": True} if kind == "one" else {}
        package = package_path(model_dir, task.head, kind)
        staging = package.with_name(f".{package.stem}.tmp.pt2")  # AOTInductor wants the .pt2 suffix
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch._inductor.aoti_compile_and_package(program, package_path=str(staging), inductor_configs=settings)
        staging.replace(package)
        packages.append(package)
    write_json(stamp, {**stamp_of(model_dir, task.head), "inputs": inputs, "max_batch": max_batch})
    trust(packages)
    return packages


def load_compiled(model_dir: str | Path, head: str, *, trusted_only: bool = False
                  ) -> Callable[[Batch], torch.Tensor] | None:
    """The packages of ``head`` as a function from a collated batch to probabilities (B, C), or None when
    there are none, or (with a warning that says why) when they were built for other weights, another
    torch or another CPU, or, with ``trusted_only``, when this user did not build them on this machine."""
    stamp_file = stamp_path(model_dir, head)
    if not stamp_file.exists():
        return None
    try:
        built = json.loads(stamp_file.read_text(encoding="utf-8"))
        changed = [key for key, value in stamp_of(model_dir, head).items() if built.get(key) != value]
    except (OSError, ValueError, AttributeError) as e:
        warnings.warn(f"{stamp_file}: unreadable ({e}); running the model without its packages", stacklevel=2)
        return None
    if changed:
        warnings.warn(f"{stamp_file.parent} holds packages built for another {', '.join(changed)}; running the "
                      f"model without them (rebuild them with `lmcraft compile {model_dir}`)", stacklevel=2)
        return None
    if not all(package_path(model_dir, head, kind).exists() for kind in KINDS):
        return None
    if trusted_only and not is_trusted(model_dir, head):
        warnings.warn(f"{stamp_file.parent} holds native packages that were not built by `lmcraft compile` on this "
                      f"machine by this user; running the model without them (give --compiled to run them, or "
                      f"rebuild them with `lmcraft compile {model_dir}`)", stacklevel=2)
        return None
    runners = {kind: torch._inductor.aoti_load_package(str(package_path(model_dir, head, kind))) for kind in KINDS}

    def probabilities(batch: Batch) -> torch.Tensor:
        if len(batch["input_ids"]) > built["max_batch"]:  # more than the package takes: in slices
            return torch.cat([probabilities({name: t[i : i + built["max_batch"]] for name, t in batch.items()})
                              for i in range(0, len(batch["input_ids"]), built["max_batch"])])
        mask = batch.get("padding_mask")
        one = batch["input_ids"].shape[0] == 1 and (mask is None or bool(mask.all()))
        kind = "one" if one else "batch"
        # the single-text package takes no padding mask; segment 0 throughout unless a text is a pair
        args = {name: batch[name] if name in batch else torch.zeros_like(batch["input_ids"])
                for name in built["inputs"][kind]}
        return runners[kind](**args)

    return probabilities

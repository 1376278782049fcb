"""LoRA: low-rank adapters on the linear layers of any lmcraft model (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models").

A frozen weight W (out × in) gets a trainable low-rank update: h = x Wᵀ + b + s · x Aᵀ Bᵀ, with A (r × in),
B (out × r), r ≪ in, out and s = alpha / r. B starts at zero, so the adapted model starts exactly as the
pretrained one, and only A and B (and the new task heads) learn.

Why it helps when compute is scarce: full fine-tuning keeps, for every weight, a gradient and AdamW's two
moments, i.e. 16 bytes per fp32 parameter with the weight itself; LoRA keeps them for well under 1% of the
parameters, so the weights alone set the memory floor (``training_memory_bytes`` estimates both). The
backward pass also skips the weight gradients of every frozen matrix (a third of those layers' matmul work;
with a tied LM head that includes the large vocabulary projection), and a fine-tuned variant of a model is a
small adapter file instead of a full copy (192 KB for the ``mini`` decoder at rank 8). It saves less than
one might hope in two places: the activations for the backward pass are still stored for every layer (the
gradient has to flow through the frozen layers down to the lowest adapter), and the forward pass costs what
it cost before, plus the small adapter matmuls.

Which layers: by default the attention projections, the fused query/key/value matrix ``qkv`` and the output
projection ``out`` (self- and, where there is one, cross-attention's): the paper adapted attention only, and
matched full fine-tuning on its tasks with a small rank. Later work (QLoRA, Dettmers et al. 2023) found that
adapting every linear layer closes more of the gap; add ``"ffn"`` for that, at 2.7 times the adapter size
(with d_ff = 4 D: 16 r D parameters per block instead of 6 r D).
Patterns are fnmatch globs over module names (``backbone.blocks.*.self_attn.qkv``) or over their last
components (``qkv``, ``self_attn``, ``ffn``); a pattern naming a container (``ffn``) adapts every
``nn.Linear`` inside it. Cross-attention's ``query`` and ``key_value`` projections are adapted when named.
Task heads trained in full (the default) get no adapters, even a decoder head with ``qkv`` layers of its own.

Merging: after training, W' = W + s · B A is one plain matrix of W's shape, so ``merge_lora`` swaps every
adapted layer back for an ``nn.Linear`` holding W'. The merged model has exactly the original state-dict
keys and costs nothing extra at inference; ``save_model_dir``, ``load_model_dir``, export and int8
quantization treat it as any other model. ``merged_state_dict`` gives the same weights without touching
the model (for saving the best model in the middle of training).

State-dict layout: a ``LoraLinear`` keeps the wrapped layer's own ``weight`` and ``bias`` parameters under
their names, so an adapted model's state dict is the original one plus ``<layer>.lora_a`` and
``<layer>.lora_b``; ``lora_state_dict`` picks those (and the heads) out for a small adapter file.

Notation in shape comments: N any leading dimensions, I in_features, O out_features, r rank.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmcraft.model.transformer import store_linear_weights

ADAPTER_KEYS = ("lora_a", "lora_b")
ADAM_STATE_BYTES = 2 * 4  # AdamW's exp_avg and exp_avg_sq, counted as fp32 per trainable element


@dataclass
class LoraConfig:
    """Which linear layers get adapters, and how large and how strong the adapters are."""

    rank: int = 8  # r, the inner dimension of B A; the adapter of an (O × I) layer has r · (I + O) parameters
    alpha: float = 16.0  # the update is scaled by alpha / rank, so changing the rank needs no new learning rate
    dropout: float = 0.0  # dropout on the adapter's input only (the frozen path sees x unchanged)
    targets: list[str] = field(default_factory=lambda: ["qkv", "out"])  # module-name globs: "qkv", "ffn", ...
    train_heads: bool = True  # task heads are new, so they stay fully trainable (a tied LM head has no weights)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, not {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if not self.targets:
            raise ValueError("targets is empty: name at least one linear layer to adapt (e.g. 'qkv')")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = x Wᵀ + b + s · dropout(x) Aᵀ Bᵀ.

    The wrapped layer's ``weight`` and ``bias`` parameters are taken over as they are (same tensors, same
    names, frozen), so the state-dict keys of the base weights do not change.
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.scale = rank, alpha / rank
        self.weight = base.weight  # (O, I), frozen
        self.bias = base.bias  # (O,) or None, frozen
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **like))  # (r, I)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **like))  # (O, r): B A = 0 at the start
        # A is initialised as nn.Linear initialises its weight (as in the paper's reference code); with B = 0
        # the scale of A only sets how fast B A moves once B learns.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)  # (N, I) -> (N, O)
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)  # (N, I) -> (N, r) -> (N, O)
        return base + self.scale * update

    def delta_weight(self) -> torch.Tensor:
        """s · B A, the update as one (O × I) matrix, computed in fp32 and returned in the weight's dtype."""
        return (self.scale * (self.lora_b.float() @ self.lora_a.float())).to(self.weight.dtype)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight W + s · B A and the same bias: the same function, no adapter."""
        like = {"device": self.weight.device, "dtype": self.weight.dtype}
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, **like)
        linear.weight.copy_(self.weight + self.delta_weight())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        store_linear_weights(linear)  # the memory order of the layers it replaces
        return linear.requires_grad_(False)  # it replaces a frozen layer; model.requires_grad_() to train it all

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"rank={self.rank}, scale={self.scale:g}")


def _matches(name: str, pattern: str) -> bool:
    """A pattern matches the whole dotted name or its last components: "qkv" matches
    "backbone.blocks.0.self_attn.qkv", as does "self_attn.qkv" or "backbone.blocks.*.self_attn.qkv"."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"*.{pattern}")


def find_targets(model: nn.Module, patterns: list[str], *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the ``nn.Linear`` layers that ``patterns`` select, in module order, leaving out those under
    the module names in ``exclude``. A pattern may name a layer or a container of layers; one that selects
    no linear layer is an error (a typo would otherwise train nothing but the heads)."""
    def included(name: str) -> bool:
        return not any(name == e or name.startswith(f"{e}.") for e in exclude)

    modules = [(name, m) for name, m in model.named_modules() if name and included(name)]
    linears = [name for name, m in modules if isinstance(m, nn.Linear)]
    adapted = [name for name, m in modules if isinstance(m, LoraLinear)]
    selected: set[str] = set()
    unmatched = []
    for pattern in patterns:
        hits = {name for name, _ in modules if _matches(name, pattern)}
        found = {lin for lin in linears if lin in hits or any(lin.startswith(f"{h}.") for h in hits)}
        if not found:
            unmatched.append(pattern)
        selected |= found
    if unmatched:
        sample = ", ".join(linears[:8]) + (", ..." if len(linears) > 8 else "")
        already = f"; already adapted: {', '.join(adapted[:4])}" if adapted else ""
        skipped = f" (not counting {', '.join(exclude)}, trained in full)" if exclude else ""
        raise ValueError(f"LoRA target pattern(s) {', '.join(map(repr, unmatched))} match no nn.Linear of the "
                         f"model{skipped}; its linear layers include: {sample or 'none'}{already}")
    return [name for name in linears if name in selected]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Freeze ``model``, put a ``LoraLinear`` in place of every linear layer ``cfg.targets`` selects, and
    unfreeze the task heads (``model.heads``, when ``cfg.train_heads``). Returns the adapted layers' names.

    Heads that are trained in full get no adapters: a new head is randomly initialised (a decoder head has
    its own ``qkv`` and ``out`` layers, which must learn in full). With ``train_heads=False`` the heads stay
    frozen, and the patterns may select linear layers in them too. Build the optimizer after this call: it
    takes only the parameters that require gradients.
    """
    heads = getattr(model, "heads", None)
    train_heads = cfg.train_heads and isinstance(heads, nn.Module)
    targets = find_targets(model, cfg.targets, exclude=("heads",) if train_heads else ())
    model.requires_grad_(False)
    if train_heads:
        heads.requires_grad_(True)  # type: ignore[union-attr]
    for name in targets:
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        _replace(model, name, LoraLinear(base, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout))
    return targets


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every ``LoraLinear`` by its merged ``nn.Linear``, in place; returns ``model``. Its state dict
    then has exactly the keys it had before ``apply_lora``. Parameters outside the adapted layers keep their
    ``requires_grad``."""
    for name, layer in lora_layers(model).items():
        _replace(model, name, layer.merged())
    return model


@torch.no_grad()
def merged_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict that ``merge_lora(model).state_dict()`` would give, without changing ``model`` (so that
    training can go on after the best model is saved). ``state`` is the model's full state dict when the
    model itself holds only a shard of it (FSDP); the model then only says where the adapters are."""
    state = dict(model.state_dict() if state is None else state)
    for name, layer in lora_layers(model).items():
        a, b = state.pop(f"{name}.lora_a"), state.pop(f"{name}.lora_b")  # (r, I), (O, r)
        weight = state[f"{name}.weight"]  # (O, I)
        state[f"{name}.weight"] = (weight.float() + layer.scale * (b.float() @ a.float())).to(weight.dtype)
    return state


def lora_state_dict(model: nn.Module, *, heads: bool = True) -> dict[str, torch.Tensor]:
    """The adapters' A and B matrices, and with ``heads`` the task heads' weights (which are trained in full
    and are as much part of the fine-tuned model): everything that differs from the pretrained model."""
    state = model.state_dict()
    keys = {f"{name}.{key}" for name in lora_layers(model) for key in ADAPTER_KEYS}
    return {k: v for k, v in state.items() if k in keys or (heads and k.startswith("heads."))}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what ``lora_state_dict`` saved into a model to which ``apply_lora`` gave the same adapters. Every
    adapter of the model must be in ``state``, and every key of ``state`` must be in the model."""
    expected = {f"{name}.{key}" for name in lora_layers(model) for key in ADAPTER_KEYS}
    if not expected:
        raise ValueError("the model has no LoRA adapters: call apply_lora with the adapters' config first")
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - model.state_dict().keys())
    if missing or unexpected:
        raise ValueError(f"LoRA state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         f"(was it saved with the same targets?)")
    model.load_state_dict(state, strict=False)


def training_memory_bytes(model: nn.Module, *, full: bool) -> int:
    """Bytes that training ``model`` holds for its parameters: every weight (frozen ones too, in its dtype),
    plus, for each trainable parameter (every parameter when ``full``), a gradient of its dtype and AdamW's
    two moments at 4 bytes each (fp32).

    It leaves out the activations saved for the backward pass, which depend on batch × length and are
    much the same with and without LoRA (the gradient still flows through every layer); buffers; autocast's
    low-precision weight copies; temporary workspace; and the framework's own memory. So it is a floor, and
    the difference between ``full=True`` and ``full=False`` is what LoRA saves at least (it also skips the
    temporaries of the frozen layers' weight gradients and of the optimizer's update).
    """
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()  # the weight itself
        if full or p.requires_grad:
            total += p.numel() * (p.element_size() + ADAM_STATE_BYTES)  # its gradient and AdamW's moments
    return total


def trainable_report(model: nn.Module) -> dict[str, float | int]:
    """Parameter counts and the training-memory estimate of ``training_memory_bytes``, as trained now
    (only parameters that require gradients) and as full fine-tuning would train it."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    now, full = training_memory_bytes(model, full=False), training_memory_bytes(model, full=True)
    return {"total": total, "trainable": trainable, "trainable_percent": 100.0 * trainable / max(total, 1),
            "train_memory_bytes": now, "full_train_memory_bytes": full, "memory_ratio": now / max(full, 1)}

"""bf16 autocast where the hardware computes in bf16 natively, and a way to force it off (or on).

On a CPU without bf16 instructions autocast still works but emulates the arithmetic, which is slower
than fp32, so ``auto`` turns it on only for GPUs that support it and CPUs with AVX512-BF16, AMX or
Arm's BF16 extension.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

CHOICES = ("auto", "on", "off")
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (/proc/cpuinfo "flags"), Arm ("Features")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU advertises native bf16 arithmetic (Linux; other systems report False)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and CPU_BF16_FLAGS & set(value.split()):
            return True
    return False


def use_bf16(setting: str, device: torch.device) -> bool:
    """Resolve ``auto`` / ``on`` / ``off`` for ``device``."""
    if setting not in CHOICES:
        raise ValueError(f"bf16 must be one of {', '.join(CHOICES)}, not {setting!r}")
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def autocast(enabled: bool, device: torch.device) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def dtype_name(bf16: bool) -> str:
    """What run cards and checkpoints record: the dtype the matrix products ran in."""
    return "bf16" if bf16 else "fp32"


def training_device() -> torch.device:
    """The device the loop trains on without torchrun (train/distributed.py picks the same)."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")

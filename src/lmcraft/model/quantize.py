"""int8 dynamic quantization for CPU inference: the weights of every linear layer are stored as int8 and
the activations quantized on the fly, which shrinks the model and speeds up matmuls on CPUs. Embeddings
and norms stay in fp32. ``lmcraft evaluate --int8`` reports the accuracy it costs."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with int8 linear layers (for inference only)."""
    model.eval()
    with warnings.catch_warnings():  # torch announces a move of this API to torchao; it works as it is
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)

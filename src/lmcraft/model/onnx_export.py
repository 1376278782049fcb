"""ONNX export of encoder heads, for runtimes without Python or PyTorch (onnxruntime, and what it embeds in).

    lmcraft export --to onnx MODEL_DIR OUT     # OUT/model.onnx, OUT/tokenizer.json, OUT/lmcraft_onnx.json

What a graph computes, by head (B batch, T tokens, C labels, D width):

- ``classify`` (every pooling: cls, mean, pooler): ``logits`` (B, C) and ``probabilities`` (B, C);
- ``tag``: ``emissions`` (B, T, C), the tag scores of every token. A CRF tagger's Viterbi decoding is not in
  the graph: its start, end and transition scores go into ``lmcraft_onnx.json`` and decoding runs outside;
- ``span`` (extractive QA): ``start_logits`` and ``end_logits`` (B, T); the runtime keeps [CLS] and the context;
- ``embeddings`` (a bare encoder, or ``--head embeddings``): ``embeddings`` (B, D), the mean of the final
  states over real tokens, L2-normalised, as ``Predictor.embed`` computes them.

Inputs are ``input_ids`` and ``attention_mask`` (B, T) int64, plus ``token_type_ids`` when the model has
segments (0 for a single text); batch and length are dynamic, up to the model's input length. Values at
padding positions of per-token outputs are not meaningful. The graph comes from ``torch.onnx.export``'s
dynamo exporter (``torch.export``), which traces the masked, padded computation, the same one that
``torch.compile`` runs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmcraft.fsutil import staged_dir, write_json
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir

EXPORTABLE = ("classify", "tag", "span")  # head kinds with an ONNX graph; "embeddings" needs no head
OUTPUTS = {"classify": ["logits", "probabilities"], "tag": ["emissions"], "span": ["start_logits", "end_logits"],
           "embeddings": ["embeddings"]}
MANIFEST = "lmcraft_onnx.json"
FORMAT = "lmcraft-onnx/1"


class EncoderHead(nn.Module):
    """(input_ids (B, T), attention_mask (B, T), token_type_ids (B, T) or None) -> the outputs of one head
    of ``model`` (``OUTPUTS[kind]``), as the head's task computes them from a collated batch."""

    def __init__(self, model: Model, head: str | None, kind: str) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.kind = kind

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.kind == "classify":
            head = self.model.heads[self.head]
            hidden = self.model(input_ids, attention_mask, token_type_ids,
                                first_only=head.reads_first_only)  # (B, T, D), or (B, 1, D) pooled on [CLS]
            logits = head(hidden, attention_mask).float()  # (B, C)
            return logits, logits.softmax(-1)
        hidden = self.model(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        if self.kind == "tag":
            return (self.model.heads[self.head](hidden, input_ids).float(),)  # (B, T, C)
        if self.kind == "span":
            start, end = self.model.heads[self.head](hidden)  # (B, T) each
            return start.float(), end.float()
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
        return (nn.functional.normalize(mean.float(), dim=-1),)


def pick_onnx_head(model: Model, head: str | None) -> tuple[str | None, str]:
    """(head name, kind) to export: the head asked for, else the first classify, tag or span head, else the
    sentence embeddings of a bare encoder."""
    if model.cfg.causal:
        raise ValueError("ONNX export is for encoders (classify, tag, qa, embeddings); this model is a decoder")
    if head == "embeddings" and "embeddings" not in model.head_specs:
        return None, "embeddings"
    if head is not None:
        if head not in model.head_specs:
            raise ValueError(f"the model has no {head!r} head (heads: {sorted(model.head_specs) or 'none'}; "
                             "or --head embeddings)")
        kind = str(model.head_specs[head].get("kind"))
        if kind not in EXPORTABLE:
            raise ValueError(f"head {head!r} is a {kind} head; ONNX export takes classify, tag and span (qa) heads, "
                             "or --head embeddings")
        return head, kind
    for name, spec in model.head_specs.items():
        if spec.get("kind") in EXPORTABLE:
            return name, str(spec["kind"])
    return None, "embeddings"


def manifest(model: Model, head: str | None, kind: str, inputs: list[str]) -> dict[str, Any]:
    """What a runtime needs to call the graph: its inputs and outputs, the labels, the input length."""
    spec = model.head_specs.get(head or "", {})
    info: dict[str, Any] = {"format": FORMAT, "model": "model.onnx", "head": head, "kind": kind, "inputs": inputs,
                            "outputs": OUTPUTS[kind], "max_length": model.input_tokens, "tokenizer": "tokenizer.json",
                            "pad_id": model.cfg.pad_id}
    if kind == "classify":
        info["pooling"] = spec.get("pooling", "cls")
    if "labels" in spec:
        info["labels"] = list(spec["labels"])  # type: ignore[call-overload]
    if kind == "tag" and spec.get("crf"):
        start, transitions, end = model.heads[head].crf.scores()  # type: ignore[index]
        # [from][to]; Viterbi runs outside the graph; what the tag scheme forbids scores FORBIDDEN (-10,000)
        info["crf"] = {"start": start.tolist(), "end": end.tolist(), "transitions": transitions.tolist()}
    return info


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, head: str | None = None,
                opset: int | None = None) -> dict[str, Any]:
    """Write ``OUT/model.onnx`` for one encoder head of ``model_dir`` (or its sentence embeddings), with the
    tokenizer and ``lmcraft_onnx.json``; ``out_dir`` appears whole or not at all."""
    model, tokenizer, _ = load_model_dir(model_dir)
    model.eval()
    head, kind = pick_onnx_head(model, head)
    wrapper = EncoderHead(model, head, kind).eval()
    tokens = model.input_tokens
    example = torch.full((2, min(8, tokens)), 5, dtype=torch.long)  # values do not shape the graph
    args: tuple[torch.Tensor, ...] = (example, torch.ones_like(example))
    names = ["input_ids", "attention_mask"]
    if model.cfg.n_segment:  # text pairs: segment 1 marks the second text
        args += (torch.zeros_like(example),)
        names.append("token_type_ids")
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("tokens", min=1, max=tokens)}
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_500_000_000  # protobuf's 2 GB limit
    quiet = contextlib.redirect_stdout(io.StringIO())  # the exporter reports its steps on stdout
    with staged_dir(out_dir) as staging, torch.inference_mode(), warnings.catch_warnings(), quiet:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(wrapper, args, str(staging / "model.onnx"), input_names=names,
                          output_names=OUTPUTS[kind], dynamic_shapes=tuple(dims for _ in args),
                          opset_version=opset, dynamo=True, external_data=big, verbose=False)
        tokenizer.save(staging)
        write_json(staging / MANIFEST, manifest(model, head, kind, names))
    return {"out": str(out_dir), "head": head, "kind": kind, "inputs": names, "outputs": OUTPUTS[kind]}

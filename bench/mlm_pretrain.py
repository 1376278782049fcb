"""MLM pretraining speed: lmcraft against transformers' BertForMaskedLM, side by side.

BERT-mini shape (4 layers, d_model 256, 4 heads, FFN 1024, vocabulary 21,128), packed sequences of 128
tokens, batch 32, 15% of tokens masked (80/10/10), AdamW, gradient clipping: one training step each,
the same batches, dtype and thread count. Each measurement runs in its own process; the two sides
alternate.

    python bench/mlm_pretrain.py [--dtype fp32|bf16] [--steps 12] [--repeats 3] [--threads 2] [--compile]

Prints tokens/s (median), the ratio, peak memory, and model FLOPs utilisation against the fp32 / bf16
matmul peak measured here. Model FLOPs count 6 × parameters × tokens for the encoder, the attention
scores, and the vocabulary projection at the masked positions only (the work MLM needs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, isolated, matmul_peak, median

SHAPE = {"vocab": 21128, "layers": 4, "d_model": 256, "heads": 4, "d_ff": 1024, "seq": 128, "batch": 32}
SPECIAL = [0, 100, 101, 102, 103]  # [PAD] [UNK] [CLS] [SEP] [MASK] of the BERT-Chinese vocabulary's layout


def batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    from lmcraft.objectives.mlm import mask_tokens

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(104, SHAPE["vocab"], (SHAPE["batch"], SHAPE["seq"]), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102
        masked = mask_tokens(ids, special_ids=SPECIAL, mask_id=103, vocab_size=SHAPE["vocab"], generator=g)
        out.append({"input_ids": masked.input_ids, "labels": masked.labels})
    return out


def model_flops_per_step(masked: float) -> float:
    d, f, v, layers, t, b = (SHAPE[k] for k in ("d_model", "d_ff", "vocab", "layers", "seq", "batch"))
    encoder = layers * (4 * d * d + 2 * d * f)  # parameters of the blocks
    tokens = b * t
    attention = layers * 2 * 2 * t * d * tokens  # QKᵀ and AV, forward
    head = (d * d + d * v) * masked  # transform + projection at masked positions
    return 6 * encoder * tokens + 3 * attention + 6 * head


def run(side: str, dtype: str, threads: int, steps: int, warmup: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = batches(steps + warmup)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    if side == "transformers":
        import transformers

        config = transformers.BertConfig(vocab_size=SHAPE["vocab"], hidden_size=SHAPE["d_model"],
                                         num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
                                         intermediate_size=SHAPE["d_ff"], max_position_embeddings=512)
        model = transformers.BertForMaskedLM(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # what Trainer's default adamw_torch builds

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    else:
        from lmcraft.model.heads import Model
        from lmcraft.model.transformer import TransformerConfig
        from lmcraft.objectives.mlm import MaskedLM
        from lmcraft.train.optim import build_optimizer

        cfg = TransformerConfig(vocab_size=SHAPE["vocab"], n_layer=SHAPE["layers"], d_model=SHAPE["d_model"],
                                n_head=SHAPE["heads"], d_ff=SHAPE["d_ff"], max_len=512)
        objective = MaskedLM(special_ids=SPECIAL, mask_id=103, pad_id=0, vocab_size=SHAPE["vocab"])
        model = Model(cfg, {"mlm": objective.head_spec()}).train()
        if side == "lmcraft compiled":  # the warm-up steps absorb the compilation
            model.compile_backbone()
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01)

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return objective.loss_sum(model, batch) / objective.n_targets(batch)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast:
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in data[:warmup]:
        step(batch)
    start = time.perf_counter()
    for batch in data[warmup:]:
        step(batch)
    seconds = time.perf_counter() - start
    masked = sum(float((b["labels"] != -100).sum()) for b in data[warmup:]) / steps
    return {"tokens_per_s": steps * SHAPE["batch"] * SHAPE["seq"] / seconds, "steps_per_s": steps / seconds,
            "flops_per_step": model_flops_per_step(masked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also measure lmcraft with --compile (torch.compile)")
    args = parser.parse_args()
    peaks = {name: matmul_peak(dt, threads=args.threads) for name, dt in (("fp32", torch.float32),
                                                                          ("bf16", torch.bfloat16))}
    options = {"dtype": args.dtype, "threads": args.threads, "steps": args.steps, "warmup": args.warmup}
    sides = ("lmcraft", "lmcraft compiled", "transformers") if args.compile else ("lmcraft", "transformers")
    results = alternate({side: (lambda side=side: isolated(run, side=side, **options)) for side in sides},
                        args.repeats)
    print(f"MLM pretraining, BERT-mini shape {SHAPE}, {args.dtype}, {args.threads} threads, "
          f"median of {args.repeats} × {args.steps} steps")
    print(f"matmul peak measured here: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    speed = {}
    for side, runs in results.items():
        speed[side] = median(runs, "tokens_per_s")
        flops = median(runs, "flops_per_step") * median(runs, "steps_per_s") / 1e9
        peak = peaks[args.dtype]
        print(f"  {side:<17}{speed[side]:>9,.0f} tokens/s   peak RSS {median(runs, 'peak_rss_mb'):>6,.0f} MB   "
              f"model {flops:>5.0f} GFLOP/s = {flops / peak:.0%} of the {args.dtype} matmul peak")
    for side in sides[:-1]:
        print(f"  {side} / transformers: {speed[side] / speed['transformers']:.2f}x")
    if peaks["bf16"] < peaks["fp32"]:
        print("  (this CPU has no native bf16: bf16 matmuls are emulated and slower than fp32, so --bf16 auto "
              "leaves it off here)")


if __name__ == "__main__":
    main()

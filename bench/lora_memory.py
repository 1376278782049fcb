"""Memory and step time of fine-tuning a decoder in full against LoRA, side by side.

The ``mini`` decoder (4 layers, d_model 256, 4 heads, FFN 1024, vocabulary 21,128, tied LM head), batch
16 × 128 tokens of next-token prediction on random ids, AdamW from ``build_optimizer``, gradient clipping:
one side trains every parameter, the other LoRA adapters of rank 8 on the attention projections (qkv, out).
Each measurement runs in its own process (so that its peak memory is its own); the sides alternate.

    python bench/lora_memory.py [--steps 10] [--warmup 2] [--repeats 3] [--rank 8] [--threads 2] [--device cpu]

Prints, per side, the median step time, tokens/s, the peak memory (CPU: the process's peak RSS, and its
growth over the RSS right after ``import torch``; CUDA: torch's peak allocated bytes) and the estimate of
``lmcraft.model.lora.training_memory_bytes`` (weights + gradients + AdamW moments, no activations), then the
LoRA / full ratios. The activations of a batch this size outweigh the ~140 MB of the model's training state,
so expect the peak to fall by roughly that state, not by the 4× the estimate alone suggests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, isolated, median

SHAPE = {"size": "mini", "vocab": 21128, "seq": 128, "batch": 16}


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def run(side: str, rank: int, threads: int, steps: int, warmup: int, device: str) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rss_start = current_rss_mb()
    from lmcraft.model.heads import Model
    from lmcraft.model.lora import LoraConfig, apply_lora, trainable_report
    from lmcraft.model.transformer import TransformerConfig
    from lmcraft.objectives.clm import CausalLM, DocBlock
    from lmcraft.train.optim import build_optimizer

    torch.manual_seed(0)
    objective = CausalLM()
    cfg = TransformerConfig.from_size(SHAPE["size"], vocab_size=SHAPE["vocab"], causal=True)
    model = Model(cfg, {"lm": objective.head_spec()})
    if side == "lora":
        apply_lora(model, LoraConfig(rank=rank, targets=["qkv", "out"]))
    model.to(device).train()
    report = trainable_report(model)
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(steps + warmup):
        ids = torch.randint(104, SHAPE["vocab"], (SHAPE["batch"], SHAPE["seq"]), generator=g).tolist()
        batch = objective.collate([DocBlock(row, [0] * SHAPE["seq"]) for row in ids])
        data.append({k: v.to(device) for k, v in batch.items()})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss = objective.loss_sum(model, batch) / objective.n_targets(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in data[:warmup]:
        step(batch)
    times = []
    for batch in data[warmup:]:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {"step_s": step_s, "tokens_per_s": SHAPE["batch"] * SHAPE["seq"] / step_s, "rss_start_mb": rss_start,
              "trainable_params": report["trainable"], "total_params": report["total"],
              "estimate_mb": report["train_memory_bytes"] / 2**20}
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    options = {"rank": args.rank, "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
               "device": args.device}
    results = alternate({side: (lambda side=side: isolated(run, side=side, **options)) for side in ("full", "lora")},
                        args.repeats)
    print(f"fine-tuning a decoder in full vs LoRA rank {args.rank} on qkv+out, shape {SHAPE}, {args.device}, "
          f"{args.threads} threads, median of {args.repeats} × {args.steps} steps")
    figures: dict[str, dict[str, float]] = {}
    for side, runs in results.items():
        f = {key: median(runs, key) for key in runs[0]}
        f["growth_mb"] = median([{"g": r["peak_rss_mb"] - r["rss_start_mb"]} for r in runs], "g")
        figures[side] = f
        share = 100 * f["trainable_params"] / f["total_params"]
        peak = (f"CUDA peak {f['cuda_peak_mb']:>6,.0f} MB" if args.device == "cuda"
                else f"peak RSS {f['peak_rss_mb']:>6,.0f} MB (+{f['growth_mb']:,.0f} over import)")
        print(f"  {side:<5} {1000 * f['step_s']:>7,.0f} ms/step {f['tokens_per_s']:>8,.0f} tokens/s   {peak}   "
              f"trainable {f['trainable_params']:>10,.0f} ({share:.2f}%)   "
              f"weights+grads+AdamW {f['estimate_mb']:>5,.0f} MB")
    full, lora = figures["full"], figures["lora"]
    memory_key = "cuda_peak_mb" if args.device == "cuda" else "growth_mb"
    print(f"  LoRA / full: step time {lora['step_s'] / full['step_s']:.2f}x, "
          f"{'CUDA peak' if args.device == 'cuda' else 'peak RSS growth'} {lora[memory_key] / full[memory_key]:.2f}x "
          f"({full[memory_key] - lora[memory_key]:,.0f} MB less), "
          f"estimate {lora['estimate_mb'] / full['estimate_mb']:.2f}x")


if __name__ == "__main__":
    main()

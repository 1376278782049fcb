"""Generation speed with and without the KV cache, next to transformers' generate on the same weights.

A GPT-2-shaped decoder with random weights (the speed does not depend on the values) is built in
transformers, converted to lmcraft, and asked for NEW tokens after a prompt, greedily, batch 1:

    python bench/generate_kv_cache.py [--layers 4] [--d-model 256] [--new 256] [--repeats 3]

Prints tokens/s (median of the repeats) for lmcraft with the cache, lmcraft without it (the whole prefix
recomputed at every step), and transformers with its cache, and the ratios. The runs alternate, so that
the machine's drift hits all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from lmcraft.model.generate import GenerationConfig, generate_ids, left_pad
from lmcraft.model.io import load_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--prompt", type=int, default=32, help="prompt length in tokens")
    parser.add_argument("--new", type=int, default=256, help="tokens to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = transformers.GPT2Config(vocab_size=args.vocab, n_embd=args.d_model, n_layer=args.layers,
                                     n_head=max(1, args.d_model // 64), n_positions=args.prompt + args.new + 8,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(args.vocab - 5))]
        (Path(tmp) / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        ours, _, _ = load_model_dir(tmp)
    prompt = torch.randint(5, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    ids, mask = left_pad(prompt.tolist(), pad_id=0)

    def run_ours(use_cache: bool) -> list[int]:
        cfg = GenerationConfig(max_new_tokens=args.new, use_cache=use_cache)
        return [int(t) for t in generate_ids(ours, ids, mask, cfg, eos_id=None)]

    def run_hf() -> list[int]:
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new, min_new_tokens=args.new,
                              do_sample=False, pad_token_id=0, eos_token_id=None)
        return out[0, args.prompt :].tolist()

    runs = {"lmcraft, KV cache": lambda: run_ours(True), "lmcraft, no cache": lambda: run_ours(False),
            "transformers generate": run_hf}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            tokens[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    speed = {name: args.new / statistics.median(s) for name, s in seconds.items()}
    print(f"GPT-2 shape: {args.layers} layers, d_model {args.d_model}, vocab {args.vocab}; prompt {args.prompt}, "
          f"{args.new} new tokens, batch 1, {args.threads} threads, median of {args.repeats}")
    for name, value in speed.items():
        print(f"  {name:<24}{value:>10.1f} tokens/s")
    cached = speed["lmcraft, KV cache"]
    print(f"  KV cache speed-up (lmcraft):          {cached / speed['lmcraft, no cache']:.1f}x")
    print(f"  lmcraft / transformers (both cached): {cached / speed['transformers generate']:.2f}x")
    same = tokens["lmcraft, KV cache"] == tokens["transformers generate"] == tokens["lmcraft, no cache"]
    print(f"  same tokens from all three: {same}")


if __name__ == "__main__":
    main()

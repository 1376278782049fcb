"""How far does the tagger's n-gram table go on its own, and which optimiser suits it?

The NER tagger's head adds hashed character n-gram scores (src/lmcraft/model/ngrams.py) to the encoder's.
This benchmark trains the table and the CRF without any encoder: a linear-chain CRF over the feature CRF's
window features, like CRFsuite's but fitted by minibatch steps instead of L-BFGS. It prints dev entity F1
after every pass, so it answers two questions: how much of the tagger's score the table alone makes, and
how the table's optimiser (plain SGD, as lmcraft trains it, against Adagrad or Adam) changes that.

    python bench/ner_table_alone.py --data runs/ner-zh/data/peoples-daily-ner --tokenizer runs/ner-zh/tokenizer \
        [--train 0] [--epochs 4] [--table-optimizer sgd|adagrad|adam] [--table-lr 300] [--scheme BIO|BIOES] \
        [--no-rules]

The data and tokenizer are those the NER recipe writes (`lmcraft run recipes/ner-zh.yaml`). The CRF's
transitions train by AdamW at lr 2e-3 (`--crf-lr`); both rates decay linearly to zero; batches of 32 sentences.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from torch import nn

from lmcraft.data.ner import read_tagged
from lmcraft.model.crf import CRF, scheme_rules
from lmcraft.model.ngrams import NGRAM_LR, HashedNgrams
from lmcraft.tasks.tag.task import Tag, TagItem
from lmcraft.tokenizer import TextTokenizer


class TableHead(nn.Module):
    """What the task reads from a tagger's head: scores from the n-grams alone, and a CRF."""

    def __init__(self, table: HashedNgrams, crf: CRF) -> None:
        super().__init__()
        self.ngrams = table
        self.crf = crf

    def forward(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.ngrams(input_ids)  # (B, T) ids -> (B, T, C); no encoder states


class TableTagger(nn.Module):
    """A model without an encoder: its "hidden states" are the ids, which the head reads directly."""

    def __init__(self, head: TableHead) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"tag": head})

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return input_ids


def dev_f1(task: Tag, model: nn.Module, items: list[TagItem]) -> dict[str, float]:
    metrics = task.new_metrics()
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), 128):
            metrics.update(model, task.collate(items[start:start + 128]))  # type: ignore[arg-type]
    model.train()
    return metrics.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a directory with train.jsonl and dev.jsonl")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the recipe's tokenizer directory")
    parser.add_argument("--train", type=int, default=0, help="the first N training sentences (0: all)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=2**20, help="hash rows of the table")
    parser.add_argument("--table-optimizer", choices=("sgd", "adagrad", "adam"), default="sgd")
    parser.add_argument("--table-lr", type=float, default=NGRAM_LR)
    parser.add_argument("--crf-lr", type=float, default=2e-3, help="AdamW's rate for the CRF's transition scores")
    parser.add_argument("--scheme", choices=("BIO", "BIOES"), default="BIO", help="the tag scheme")
    parser.add_argument("--rules", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the CRF to the scheme's rules of which tag may follow which (as lmcraft's "
                             "tagger does); --no-rules: learn them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    shuffle = random.Random(args.seed)
    tokenizer = TextTokenizer.load(args.tokenizer)
    train = read_tagged(args.data / "train.jsonl")
    train = train[: args.train] if args.train > 0 else train
    task = Tag.for_examples(train, tokenizer.pad_id, crf=True, scheme=args.scheme)
    table = HashedNgrams(tokenizer.vocab_size, tokenizer.pad_id, args.rows, len(task.labels), args.table_lr)
    crf = CRF(len(task.labels), scheme_rules(task.labels, args.scheme) if args.rules else None)
    model = TableTagger(TableHead(table, crf))
    train_items = task.encode(tokenizer, train, 128)
    dev_items = task.encode(tokenizer, read_tagged(args.data / "dev.jsonl"), 128)

    weights = table.table.weight
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(model.heads["tag"].crf.parameters(), lr=args.crf_lr)]
    if args.table_optimizer == "sgd":
        optimizers.append(torch.optim.SGD([weights], lr=args.table_lr))
    elif args.table_optimizer == "adagrad":
        optimizers.append(torch.optim.Adagrad([weights], lr=args.table_lr))
    else:
        optimizers.append(torch.optim.SparseAdam([weights], lr=args.table_lr))
    steps = args.epochs * -(-len(train_items) // 32)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: max(0.0, 1 - s / steps)) for o in optimizers]

    rules = "the scheme's rules" if args.rules else "transitions learnt"
    print(f"{len(train_items):,} train / {len(dev_items):,} dev pieces, {args.scheme} tags ({rules}); "
          f"table {args.rows:,} rows × {len(task.labels)} tags by {args.table_optimizer} at lr {args.table_lr:g}")
    began = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = list(range(len(train_items)))
        shuffle.shuffle(order)
        for start in range(0, len(order), 32):
            batch = task.collate([train_items[i] for i in order[start:start + 32]])
            loss = task.loss_sum(model, batch) / task.n_targets(batch)  # type: ignore[arg-type]
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, schedule in zip(optimizers, schedules, strict=True):
                optimizer.step()
                schedule.step()
        got = dev_f1(task, model, dev_items)
        per_type = " ".join(f"{k[3:]} {v:.3f}" for k, v in got.items() if k.startswith("f1_"))
        print(f"pass {epoch}: dev F1 {got['f1']:.4f} ({per_type}); {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()

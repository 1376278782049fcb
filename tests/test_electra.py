"""ELECTRA pretraining (``--objective electra``): the generator's samples replace the masked tokens and the
discriminator is scored at every real token; an encoder pretrained so exports to transformers as
``ElectraForPreTraining`` / ``ElectraModel`` with the same outputs, and fine-tunes like any encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from lmcraft.cli import main
from lmcraft.model.export import export_hf
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.objectives.electra import ReplacedTokenDetection
from lmcraft.objectives.mlm import IGNORE

SPECIAL = [0, 1, 2, 3, 4]  # pad, unk, cls, sep, mask


def electra_model(vocab: int = 200) -> Model:
    torch.manual_seed(0)
    cfg = TransformerConfig.from_size("tiny", vocab, max_len=32)
    return Model(cfg, {"generator": {"kind": "generator", "share": 0.25}, "rtd": {"kind": "rtd"}})


def test_masked_tokens_are_replaced_by_the_generator_s_samples_and_every_real_token_is_scored() -> None:
    model, objective = electra_model().eval(), ReplacedTokenDetection(SPECIAL, mask_id=4, pad_id=0, vocab_size=200)
    rows = [torch.randint(5, 200, (24,)).tolist() for _ in range(6)] + [torch.randint(5, 200, (10,)).tolist()]
    batch = objective.collate(rows, torch.Generator().manual_seed(1))
    selected = batch["labels"] != IGNORE
    assert bool((batch["input_ids"][selected] == 4).all()), "ELECTRA masks with [MASK] only"
    with torch.no_grad():
        model.heads["generator"].bias[77] = 1e4  # a generator sure of token 77
        found = objective.detect(model, batch)
    assert found.targets.numel() == int(selected.sum()) == objective.n_targets(batch)
    real = int(batch["padding_mask"].sum())
    assert found.logits.numel() == found.replaced.numel() == real == 6 * 24 + 10  # every real token, no padding
    # every masked token became 77, so it counts as replaced unless it was 77 already
    was_77 = batch["original_ids"][selected] == 77
    assert int(found.replaced.sum()) == int((~was_77).sum())
    with torch.no_grad():
        loss = objective.loss_sum(model, batch)
    metrics = objective.new_metrics()
    metrics.update(model, batch)
    result = metrics.compute()
    assert result["replaced_share"] == pytest.approx(int(found.replaced.sum()) / real)
    # the summed loss over the masked count is the mean MLM loss plus λ times the mean detection loss
    assert float(loss) / found.targets.numel() == pytest.approx(result["loss"], rel=1e-4)


@pytest.mark.slow
def test_an_electra_encoder_exports_to_transformers_and_fine_tunes(sentiment_dir: Path, zh_tokenizer_dir: Path,
                                                                   tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    texts = [json.loads(line)["text"] for line in (sentiment_dir / "train.jsonl").read_text().splitlines()[:400]]
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["pretrain", "--objective", "electra", "--corpus", str(corpus), "--tokenizer", str(zh_tokenizer_dir),
                 "--size", "tiny", "--max-len", "32", "--max-steps", "12", "--eval-every", "6", "--batch-size", "8",
                 "--bf16", "off", "--no-progress", "--no-tensorboard", "--out", str(tmp_path / "pt")]) == 0
    summary = json.loads((tmp_path / "pt" / "summary.json").read_text())
    assert {"loss", "generator_accuracy", "detection_accuracy"} <= set(summary["dev"])

    ours, _, _ = load_model_dir(tmp_path / "pt" / "best")
    exported = export_hf(tmp_path / "pt" / "best", tmp_path / "hf")
    assert exported["class"] == "ElectraForPreTraining"
    ids = torch.tensor([[2, 55, 301, 17, 999, 42, 3, 0], [2, 8, 9, 10, 11, 12, 13, 3]])
    mask = (ids != 0).long()
    hf = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").eval()
    bare = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(bare).__name__ == "ElectraModel"
    with torch.no_grad():
        hidden = ours(ids, mask)
        logits = ours.heads["rtd"](hidden)
        theirs = hf(input_ids=ids, attention_mask=mask).logits
        theirs_hidden = bare(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(theirs[real], logits[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(theirs_hidden[real], hidden[real], atol=1e-4, rtol=0)

    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 64), ("dev", 32)):
        lines = (sentiment_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["finetune", "--init", str(tmp_path / "pt" / "best"), "--data", str(data), "--max-steps", "4",
                 "--eval-every", "2", "--batch-size", "16", "--no-baseline", "--no-progress", "--no-tensorboard",
                 "--out", str(tmp_path / "ft")]) == 0
    heads = json.loads((tmp_path / "ft" / "best" / "config.json").read_text())["heads"]
    assert list(heads) == ["classify"]  # the generator and the detection head stay behind

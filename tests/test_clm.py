"""Causal LM with packed documents: no position attends to another document, positions restart, and no
loss crosses a document boundary; packed training equals one document at a time."""

from __future__ import annotations

from pathlib import Path

import torch

from lmcraft.config import TrainConfig
from lmcraft.model.heads import Model
from lmcraft.objectives.clm import CausalLM, DocBlock, pack_documents
from lmcraft.objectives.mlm import IGNORE
from lmcraft.train.loop import train
from tests.conftest import tiny_config

EOS = 3


def test_blocks_are_full_and_labels_stay_inside_documents() -> None:
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34], [40]]
    blocks = pack_documents(docs, block=4, eos_id=EOS)
    assert [b.ids for b in blocks] == [[10, 11, 12, EOS], [20, 21, EOS, 30], [31, 32, 33, 34]]
    assert blocks[1].documents == [1, 1, 1, 2]
    batch = CausalLM().collate(blocks)
    labels, documents = batch["labels"], batch["document_ids"]
    for row in range(len(blocks)):
        for t in range(3):
            if labels[row, t] != IGNORE:
                assert documents[row, t] == documents[row, t + 1] and labels[row, t] == batch["input_ids"][row, t + 1]
    assert labels[1].tolist() == [21, EOS, IGNORE, IGNORE]  # "30" is not predicted from document 1


def test_no_position_attends_to_another_document() -> None:
    torch.manual_seed(0)
    for position in ("learned", "rotary"):
        model = Model(tiny_config(causal=True, position=position), {"lm": {"kind": "lm"}}).eval()
        first, second = [5, 6, 7, 8, 9], [11, 12, 13]
        packed = torch.tensor([first + second])
        documents = torch.tensor([[0] * 5 + [1] * 3])
        with torch.no_grad():
            together = model(packed, document_ids=documents)  # (1, 8, D)
            alone = model(torch.tensor([second]))  # the second document by itself, from position 0
            changed = model(torch.tensor([[50, 51, 52, 53, 54, *second]]), document_ids=documents)
        torch.testing.assert_close(together[0, 5:], alone[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(changed[0, 5:], together[0, 5:], rtol=0, atol=0)
        # and within a document, still causal: a later token cannot change an earlier state
        with torch.no_grad():
            later = model(torch.tensor([[5, 6, 7, 8, 60, *second]]), document_ids=documents)
        torch.testing.assert_close(later[0, :4], together[0, :4], rtol=0, atol=0)


def test_packed_clm_trains(tmp_path: Path) -> None:
    docs = [[5 + (i * 7 + j) % 90 for j in range(3 + i % 9)] for i in range(300)]
    blocks = pack_documents(docs, block=32, eos_id=EOS)
    model = Model(tiny_config(causal=True), {"lm": {"kind": "lm"}})
    objective = CausalLM()
    result = train(model, objective, blocks[:-8], blocks[-8:],
                   TrainConfig(lr=3e-3, batch_size=8, max_steps=40, eval_every=20, progress=False, tensorboard=False),
                   run_dir=tmp_path, save_best=lambda path, state: None)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first and isinstance(blocks[0], DocBlock)


def test_pretrain_command_trains_a_decoder(tmp_path: Path, peoples_daily: Path, zh_tokenizer_dir: Path) -> None:
    from lmcraft.cli import main
    from lmcraft.model.io import load_model_dir

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(peoples_daily.read_text(encoding="utf-8").splitlines()[:200]) + "\n", encoding="utf-8")
    assert main(["pretrain", "--objective", "clm", "--corpus", str(corpus), "--tokenizer", str(zh_tokenizer_dir),
                 "--out", str(tmp_path / "gpt"), "--size", "tiny", "--max-len", "64", "--max-steps", "3",
                 "--eval-every", "3", "--no-progress", "--no-tensorboard"]) == 0
    model, _, _ = load_model_dir(tmp_path / "gpt" / "best")
    assert model.cfg.causal and set(model.head_specs) == {"lm"}
    assert main(["generate", str(tmp_path / "gpt" / "best"), "中国", "--max-new-tokens", "3"]) == 0
    assert main(["pretrain", "--objective", "clm", "--whole-word", "--corpus", str(corpus), "--tokenizer",
                 str(zh_tokenizer_dir)]) == 2

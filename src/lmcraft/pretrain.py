"""The pretraining stage: corpus → packed token blocks → masked language modelling → ``OUT/best``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from lmcraft.config import PretrainConfig, to_dict
from lmcraft.data.readers import read_corpus
from lmcraft.model.heads import Model
from lmcraft.model.io import count_parameters, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.objectives.mlm import MaskedLM, pack, pack_words
from lmcraft.objectives.words import word_starts
from lmcraft.runcard import write_run_card
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.loop import train


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain an encoder with MLM; returns a summary with the best dev metrics and wall times."""
    if not cfg.corpus:
        raise ValueError("pretraining needs a corpus: give --corpus FILE [FILE ...]")
    if not cfg.tokenizer:
        raise ValueError("pretraining needs a tokenizer: give --tokenizer DIR (see `lmcraft tokenizer train`)")
    start = time.perf_counter()
    tokenizer = TextTokenizer.load(cfg.tokenizer)
    lines = read_corpus(cfg.corpus)
    blocks: list[Any]
    if cfg.whole_word:
        token_lists, starts = word_starts(tokenizer, lines, user_dict=cfg.user_dict or None)
        blocks = pack_words(token_lists, starts, block=cfg.model.max_len, cls_id=tokenizer.cls_id,
                            sep_id=tokenizer.sep_id)
    else:
        token_lists = tokenizer.encode(lines, max_len=None, special_tokens=False)
        blocks = pack(token_lists, block=cfg.model.max_len, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
    if len(blocks) < 2:
        raise ValueError(f"the corpus gives only {len(blocks)} block(s) of {cfg.model.max_len} tokens; "
                         "give more text or a smaller --max-len")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
    n_dev = max(1, int(len(blocks) * cfg.dev_fraction))
    dev = [blocks[i] for i in order[:n_dev]]
    train_blocks = [blocks[i] for i in order[n_dev:]]
    prepare_s = time.perf_counter() - start

    torch.manual_seed(cfg.train.seed)
    arch = TransformerConfig.from_size(
        cfg.model.size, tokenizer.vocab_size, max_len=cfg.model.max_len, norm_first=cfg.model.norm_first,
        position=cfg.model.position, dropout=cfg.model.dropout, pad_id=tokenizer.pad_id,
    )
    objective = MaskedLM(special_ids=tokenizer.special_ids, mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
                         vocab_size=tokenizer.vocab_size, rate=cfg.mask_rate)
    model = Model(arch, {objective.head: objective.head_spec()})
    print(f"pretrain: {len(lines):,} lines → {len(train_blocks):,} train / {len(dev):,} dev blocks of "
          f"{cfg.model.max_len} tokens; model {cfg.model.size}, {count_parameters(model) / 1e6:.1f}M parameters")
    out = Path(cfg.out)
    result = train(model, objective, train_blocks, dev, cfg.train, run_dir=out,
                   save_best=lambda path, state: save_model_dir(path, model, tokenizer, state=state,
                                                                extra={"stage": "pretrain"}))
    if not result.is_main:  # other processes of a distributed run stop here; rank 0 writes
        return {"stage": "pretrain", "rank": "worker"}
    summary = {
        "stage": "pretrain", "model_dir": str(out / "best"), "steps": result.steps, "best_step": result.best_step,
        "dev": {k: v for k, v in result.best_metrics.items() if k in ("loss", "perplexity", "accuracy")},
        "train_blocks": len(train_blocks), "tokens_per_block": cfg.model.max_len,
        "wall_time_s": {"prepare": prepare_s, "train": result.seconds},
    }
    write_run_card(out / "best", stage="pretrain", config=to_dict(cfg), data=cfg.corpus, seed=cfg.train.seed,
                   wall_time_s=summary["wall_time_s"], metrics={"dev": summary["dev"]})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary

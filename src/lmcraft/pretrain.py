"""The pretraining stage: corpus → packed token blocks → an objective (``OBJECTIVES``: masked or causal
language modelling, replaced-token detection (ELECTRA), or span corruption) → ``OUT/best``; also continued
pretraining of a saved model on a domain corpus, with vocabulary extension and replay. Token shards are
packed block by block as training asks for them (``objectives/packing.py``), so a corpus need not fit in
memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmcraft.config import PretrainConfig
from lmcraft.data.corpus.shards import TokenShards, TokenStream
from lmcraft.data.readers import read_corpus
from lmcraft.model.heads import Model
from lmcraft.model.io import count_parameters, load_model_dir, save_model_dir
from lmcraft.model.transformer import TransformerConfig
from lmcraft.model.vocab import add_special_tokens, extend_vocabulary, read_words
from lmcraft.objectives.clm import CausalLM, pack_documents
from lmcraft.objectives.electra import ReplacedTokenDetection
from lmcraft.objectives.mix import CorpusMix, Sourced
from lmcraft.objectives.mlm import MaskedLM, pack, pack_words
from lmcraft.objectives.nsp import LABELS, PairedMLM, encode_pairs, make_pairs
from lmcraft.objectives.packing import PackedBlocks, Picked
from lmcraft.objectives.spans import SENTINEL_TOKENS, SpanCorruption
from lmcraft.objectives.words import word_starts
from lmcraft.stage import finish_stage, run_summary
from lmcraft.tokenizer import TextTokenizer
from lmcraft.train.distributed import Distributed, TaskModule
from lmcraft.train.doctor import Checkup
from lmcraft.train.loop import evaluate, train


@dataclass(frozen=True)
class Objective:
    """What one ``--objective`` trains: its heads, whether the backbone is causal, and the objective itself."""

    heads: dict[str, dict[str, object]]  # head name -> spec
    causal: bool  # a decoder (True) or an encoder
    make: Callable[[PretrainConfig, TextTokenizer], Any]  # the objective, for this tokenizer
    special_tokens: tuple[str, ...] = ()  # tokens it needs that the tokenizer may lack (added, embeddings grown)


def _masked_lm(cfg: PretrainConfig, tokenizer: TextTokenizer) -> MaskedLM:
    return MaskedLM(special_ids=tokenizer.special_ids, mask_id=tokenizer.mask_id, pad_id=tokenizer.pad_id,
                    vocab_size=tokenizer.vocab_size, rate=cfg.mask_rate)


def _replaced_token_detection(cfg: PretrainConfig, tokenizer: TextTokenizer) -> ReplacedTokenDetection:
    return ReplacedTokenDetection(special_ids=tokenizer.special_ids, mask_id=tokenizer.mask_id,
                                  pad_id=tokenizer.pad_id, vocab_size=tokenizer.vocab_size, rate=cfg.mask_rate)


def _span_corruption(cfg: PretrainConfig, tokenizer: TextTokenizer) -> SpanCorruption:
    sentinels = [tokenizer.tokenizer.token_to_id(t) for t in SENTINEL_TOKENS]
    return SpanCorruption(sentinels, bos_id=tokenizer.cls_id, pad_id=tokenizer.pad_id, density=cfg.mask_rate)


OBJECTIVES: dict[str, Objective] = {
    "mlm": Objective({"mlm": {"kind": "mlm"}}, causal=False, make=_masked_lm),
    "electra": Objective({"generator": {"kind": "generator", "share": 0.25}, "rtd": {"kind": "rtd"}}, causal=False,
                         make=_replaced_token_detection),
    "clm": Objective({"lm": {"kind": "lm", "tied": True}}, causal=True, make=lambda cfg, tokenizer: CausalLM()),
    "span": Objective({"decoder": {"kind": "decoder", "n_layer": 0}}, causal=False, make=_span_corruption,
                      special_tokens=tuple(SENTINEL_TOKENS)),
}


def start_pretraining(cfg: PretrainConfig) -> tuple[Model, TextTokenizer, int, list[str], int]:
    """A new model of --size with --tokenizer, or --init's model (its pretraining head, or a new one) with its
    own tokenizer, extended by --add-words and by the objective's special tokens. Returns (model, tokenizer,
    block length, words added, the vocabulary size token shards must have: before the special tokens)."""
    torch.manual_seed(cfg.train.seed)
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {cfg.objective!r}")
    if cfg.embedding_init not in ("random", "cooccurrence"):
        raise ValueError(f"embedding_init must be random or cooccurrence, not {cfg.embedding_init!r}")
    if cfg.embedding_init != "random" and cfg.init:
        raise ValueError("--embedding-init starts a new model; --init continues one whose embeddings are trained")
    if cfg.objective != "mlm" and (cfg.whole_word or cfg.replay or cfg.add_words or cfg.sentence_task):
        raise ValueError("--whole-word, --replay, --add-words and --sentence-task go with the mlm objective")
    if cfg.sentence_task and (cfg.whole_word or cfg.replay):
        raise ValueError("--sentence-task trains on sentence pairs; it does not combine with --whole-word or --replay")
    objective = OBJECTIVES[cfg.objective]
    head = dict(objective.heads)
    if cfg.sentence_task:
        head[cfg.sentence_task] = {"kind": "classify", "n_labels": 2, "labels": LABELS[cfg.sentence_task],
                                   "pooling": "pooler"}
    if not cfg.init:
        if cfg.add_words:
            raise ValueError("--add-words extends the vocabulary of an existing model: give --init MODEL_DIR")
        tokenizer = TextTokenizer.load(cfg.tokenizer)
        shard_vocab = tokenizer.vocab_size
        missing = [t for t in objective.special_tokens if tokenizer.tokenizer.token_to_id(t) is None]
        if missing:  # a new model: its embeddings are made for the grown vocabulary
            tokenizer.tokenizer.add_special_tokens(missing)
        arch = TransformerConfig.for_new_model(cfg.model, tokenizer.vocab_size, tokenizer.pad_id,
                                               causal=objective.causal)
        return Model(arch, head), tokenizer, cfg.model.max_len, [], shard_vocab
    model, tokenizer, _ = load_model_dir(cfg.init)
    if model.cfg.causal != objective.causal:
        kind = "a decoder" if model.cfg.causal else "an encoder"
        raise ValueError(f"{cfg.init} is {kind}; --objective {cfg.objective} continues "
                         f"{'decoders' if objective.causal else 'encoders'}")
    model.heads = torch.nn.ModuleDict({k: v for k, v in model.heads.items() if k in head})  # task heads idle
    model.head_specs = {k: v for k, v in model.head_specs.items() if k in head}
    added = extend_vocabulary(model, tokenizer, read_words(cfg.add_words)) if cfg.add_words else []
    shard_vocab = tokenizer.vocab_size
    if objective.special_tokens and add_special_tokens(model, tokenizer, objective.special_tokens) and \
            any(spec["kind"] == "decoder" for spec in model.head_specs.values()):
        raise ValueError(f"{cfg.init} has a decoder head but its tokenizer lacks the span sentinels")
    for name, spec in head.items():
        if name not in model.heads:
            model.add_head(name, spec)
    model.train()
    return model, tokenizer, min(model.cfg.max_tokens, cfg.model.max_len), added, shard_vocab


def seed_embeddings(model: Model, tokenizer: TextTokenizer, blocks: Sequence[Any], seed: int) -> None:
    """Start the token embeddings at co-occurrence (PPMI-SVD) vectors of the training blocks' text."""
    from lmcraft.model.embedding_init import cooccurrence_embeddings, init_token_embeddings

    began = time.perf_counter()
    embedding = model.backbone.embed.token
    vectors, seen = cooccurrence_embeddings((getattr(b, "ids", b) for b in blocks), tokenizer.vocab_size,
                                            embedding.embedding_dim, special_ids=tokenizer.special_ids, seed=seed)
    n = init_token_embeddings(embedding, vectors, seen)
    print(f"embeddings: {n:,} of {tokenizer.vocab_size:,} tokens start at co-occurrence vectors "
          f"({time.perf_counter() - began:.1f} s)")


def shard_stream(paths: list[str], tokenizer: TextTokenizer, vocab_size: int) -> TokenStream | None:
    """The documents of token-shard directories (``lmcraft data corpus``) as one memory-mapped stream, each
    document followed by [SEP]; None when ``paths`` are text files. The shards must come from a tokenizer of
    ``vocab_size`` entries."""
    dirs = [Path(p) for p in paths if (Path(p) / "manifest.json").is_file()]
    if not dirs:
        return None
    if len(dirs) != len(paths):
        raise ValueError("--corpus mixes token-shard directories and text files; give one kind")
    corpora = [TokenShards(directory) for directory in dirs]
    for directory, shards in zip(dirs, corpora, strict=True):
        size = shards.manifest["tokenizer"]["vocab_size"]
        if size != vocab_size:
            raise ValueError(f"{directory}: its shards hold ids of a {size}-token vocabulary; this tokenizer has "
                             f"{vocab_size} (run `lmcraft data corpus` with the same tokenizer)")
    return TokenStream(corpora, sep_id=tokenizer.sep_id)


def make_blocks(cfg: PretrainConfig, tokenizer: TextTokenizer, lines: list[str], max_len: int,
                stream: TokenStream | None = None) -> Sequence[Any]:
    """Packed blocks of ``max_len`` tokens (with word-start flags for whole-word masking): built from
    ``lines``, or, from token shards (``stream``), computed block by block when indexed."""
    blocks: Sequence[Any]
    documents = cfg.objective == "clm"  # CLM blocks carry document ids; MLM and span blocks [CLS] ... [SEP]
    if stream is not None:
        blocks = PackedBlocks(stream, block=max_len, cls_id=tokenizer.cls_id, documents=documents)
    elif cfg.whole_word:
        token_lists, starts = word_starts(tokenizer, lines, user_dict=cfg.user_dict or None)
        blocks = pack_words(token_lists, starts, block=max_len, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
    else:
        token_lists = tokenizer.encode(lines, max_len=None, special_tokens=False)
        blocks = pack_documents(token_lists, block=max_len, eos_id=tokenizer.sep_id) if documents else \
            pack(token_lists, block=max_len, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)
    if len(blocks) < 2:
        raise ValueError(f"the corpus gives only {len(blocks)} block(s) of {max_len} tokens; "
                         "give more text or a smaller --max-len")
    return blocks


def split_blocks(blocks: Sequence[Any], dev_fraction: float, seed: int) -> tuple[Picked, Picked]:
    """(dev, train): a seeded share of the blocks held out; views of ``blocks`` that copy no block."""
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed)).numpy()
    n_dev = max(1, int(len(blocks) * dev_fraction))
    return Picked(blocks, order[:n_dev]), Picked(blocks, order[n_dev:])


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain a model with ``cfg.objective``; returns a summary with the best dev metrics and wall times."""
    if not cfg.corpus:
        raise ValueError("pretraining needs a corpus: give --corpus FILE [FILE ...]")
    if not cfg.tokenizer and not cfg.init:
        raise ValueError("pretraining needs a tokenizer: give --tokenizer DIR (see `lmcraft tokenizer train`), or "
                         "--init MODEL_DIR to continue pretraining a model")
    start = time.perf_counter()
    model, tokenizer, max_len, added, shard_vocab = start_pretraining(cfg)
    stream = shard_stream(cfg.corpus, tokenizer, shard_vocab)
    if stream is not None and (cfg.whole_word or cfg.sentence_task):
        raise ValueError("--whole-word and --sentence-task need the text: give text files, not token shards")
    lines = read_corpus(cfg.corpus) if stream is None else []
    if cfg.sentence_task:  # sentence pairs, one per document, instead of packed blocks
        if cfg.sentence_task not in LABELS:
            raise ValueError(f"sentence_task must be nsp or sop, not {cfg.sentence_task!r}")
        blocks: Sequence[Any] = encode_pairs(tokenizer, make_pairs(lines, cfg.sentence_task, cfg.train.seed), max_len)
    else:
        blocks = make_blocks(cfg, tokenizer, lines, max_len, stream)
    dev, train_blocks = split_blocks(blocks, cfg.dev_fraction, cfg.train.seed)
    if cfg.embedding_init == "cooccurrence":  # from the training blocks only: the dev loss stays held out
        seed_embeddings(model, tokenizer, train_blocks, cfg.train.seed)
    if cfg.replay:
        if not 0 <= cfg.replay_ratio < 1:
            raise ValueError(f"replay_ratio must lie in [0, 1) with --replay, got {cfg.replay_ratio}")
        general_dev, general_train = split_blocks(make_blocks(cfg, tokenizer, read_corpus(cfg.replay), max_len),
                                                  cfg.dev_fraction, cfg.train.seed)
        # replay_ratio of the training blocks are general text: n_general / (n_domain + n_general) = ratio
        n_general = round(len(train_blocks) * cfg.replay_ratio / (1 - cfg.replay_ratio))
        pick = torch.randint(len(general_train), (n_general,), generator=torch.Generator().manual_seed(cfg.train.seed))
        train_blocks = [Sourced(0, b) for b in train_blocks] + [Sourced(1, general_train[i]) for i in pick.tolist()]
        dev = [Sourced(0, b) for b in dev] + [Sourced(1, b) for b in general_dev]  # type: ignore[assignment]
    prepare_s = time.perf_counter() - start

    objective: Any = OBJECTIVES[cfg.objective].make(cfg, tokenizer)
    if cfg.replay:
        objective = CorpusMix(objective, ["domain", "general"])
    if cfg.sentence_task:
        objective = PairedMLM(objective, cfg.sentence_task)
    before = None
    if cfg.init:  # where continued pretraining starts: the held-out losses before any update
        before = evaluate(TaskModule(model, objective), objective, dev, cfg.train, Distributed(), desc="before")
        model.train()
    what = f"continuing {cfg.init}" + (f", {len(added)} words added" if added else "") if cfg.init else \
        f"model {cfg.model.size}"
    if cfg.replay:
        what += f"; {cfg.replay_ratio:.0%} of the training blocks replay general text"
    source = f"{len(lines):,} lines" if stream is None else f"{stream.n_docs:,} documents of token shards"
    print(f"pretrain: {source} → {len(train_blocks):,} train / {len(dev):,} dev blocks of "
          f"{max_len} tokens; {what}, {count_parameters(model) / 1e6:.1f}M parameters")
    out = Path(cfg.out)
    result = train(model, objective, train_blocks, dev, cfg.train, run_dir=out,
                   save_best=lambda path, state: save_model_dir(path, model, tokenizer, state=state,
                                                                extra={"stage": "pretrain"}),
                   started=start)
    if not result.is_main:  # other processes of a distributed run stop here; rank 0 writes
        return {"stage": "pretrain", "rank": "worker"}
    summary = run_summary("pretrain", out, result, prepare_s)
    summary["dev"] = {k: v for k, v in summary["dev"].items()
                      if k.rpartition("/")[2] in ("loss", "perplexity", "accuracy") or k.endswith("_accuracy")}
    if before is not None:
        summary["dev_before"] = before
    summary.update(train_blocks=len(train_blocks), tokens_per_block=max_len, added_words=len(added))
    checkup = Checkup("pretrain", objective.metric, objective.greater_is_better, cfg.train, dev_size=len(dev))
    return finish_stage(out, summary, config=cfg, data=[*cfg.corpus, *cfg.replay], seed=cfg.train.seed,
                        checkup=checkup)

"""Text generation with a decoder: greedy decoding or sampling, one token at a time, with a KV cache.

Each step feeds only the newest token; the keys and values of the earlier positions come from the cache
(``transformer.KVCache``), so a step costs O(T) attention instead of recomputing the whole prefix.
Prompts of different lengths are batched with padding on the left, so that every row's next token is
at the same (last) column; positions count real tokens only.

Choosing the next token: logits / temperature, then top-k and nucleus (top-p) filtering, then a draw;
temperature 0 means greedy. A repetition penalty divides the (positive) logits of tokens already in the
row (CTRL, Keskar et al. 2019). A row stops at the end-of-sequence token or when its text contains a stop
string.

Beam search, which keeps the k best partial outputs instead of one, is ``beam.beam_decode``: for a
decoder-only model, and for the ``decoder`` head of an encoder-decoder (``tasks/seq2seq.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from lmcraft.model.heads import Model
from lmcraft.model.transformer import KVCache
from lmcraft.tokenizer import TextTokenizer


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64  # tokens to add at most
    temperature: float = 0.0  # 0: greedy; otherwise sample from softmax(logits / temperature)
    top_k: int = 0  # sample among the k most likely tokens only; 0 turns it off
    top_p: float = 1.0  # sample among the smallest set of tokens whose probabilities reach p
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the row less likely
    stop: list[str] = field(default_factory=list)  # a row ends when its new text contains one of these
    seed: int = 0  # seed of the draws
    use_cache: bool = True  # False recomputes the whole prefix at every step (for comparison only)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T) and padding mask (B, T), padding on the left."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, longest - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, longest - len(row) :] = 1
    return ids, mask


def choose(logits: torch.Tensor, seen: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator) -> torch.Tensor:
    """The next token of each row from its logits (B, V); ``seen`` (B, S) holds the row's tokens so far."""
    logits = logits.float()
    if cfg.repetition_penalty != 1.0:
        previous = logits.gather(1, seen)
        penalised = torch.where(previous > 0, previous / cfg.repetition_penalty, previous * cfg.repetition_penalty)
        logits = logits.scatter(1, seen, penalised)
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= cfg.top_p  # keep the tokens until p is reached
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


# A decode step's matmuls are (B, D) × (D, 3D) and the like. Below about a megaflop each, splitting them
# over several threads costs more than it saves (measured: d_model 256, batch 1 decodes 13% faster on one
# thread of two; d_model 768 decodes faster on two), so small steps run on one thread.
SINGLE_THREAD_STEP_FLOPS = 1e6


# Tied tables' transposed copies, kept while the table lives and is unchanged: ((version, address), copy).
_READ_COPIES: WeakTensorKeyDictionary = WeakTensorKeyDictionary()


def read_order(table: torch.Tensor) -> torch.Tensor:
    """The tied output projection's table (V, D), copied so that its transpose (D, V) is row-major.

    A decode step multiplies one row per sequence by table.T; MKL reads a row-major (D, V) matrix 2-3x
    faster than the transpose of the (V, D) embedding table (see ``store_linear_weights``). Making the copy
    takes as long as a few dozen such reads (0.6-1.3 s for Qwen2-0.5B's 151,936 x 896 table), so it is
    kept for later calls until the table changes (an optimizer step, a load), at the cost of the table's
    memory once more.
    """
    key = (table._version, table.data_ptr())
    cached = _READ_COPIES.get(table)
    if cached is not None and cached[0] == key:
        return cached[1]
    copy = table.detach().t().contiguous().t()
    _READ_COPIES[table] = (key, copy)
    return copy


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def generate_ids(
    model: Model, ids: torch.Tensor, padding_mask: torch.Tensor, cfg: GenerationConfig, *, eos_id: int | None,
    pad_id: int = 0,
) -> Iterator[torch.Tensor]:
    """Yields the next token of every row (B,), step by step; finished rows get ``pad_id``. ``ids`` are
    left-padded prompts (B, T) with their padding mask."""
    if "lm" not in model.head_specs:
        raise ValueError(f"generation needs a decoder with a language-model head (heads: {sorted(model.head_specs)})")
    model.eval()
    backbone, head = model.backbone, model.heads["lm"]
    embedding = backbone.embed.token.weight
    batch, length = ids.shape
    total = length + cfg.max_new_tokens
    if total > backbone.cfg.max_tokens:
        raise ValueError(f"prompt ({length}) + max_new_tokens ({cfg.max_new_tokens}) exceed the model's "
                         f"{backbone.cfg.max_tokens} positions")
    generator = torch.Generator().manual_seed(cfg.seed)
    mask = padding_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): real tokens count from 0
    cache = KVCache(backbone.cfg, batch, total, dtype=embedding.dtype) if cfg.use_cache else None
    seen = ids.clone()
    finished = torch.zeros(batch, dtype=torch.bool)
    hidden = backbone(ids, mask, position_ids=positions, cache=cache)  # (B, T, D)
    output_table = read_order(embedding) if getattr(head, "proj", None) is None else embedding
    step_flops = 2 * batch * backbone.cfg.d_model * 3 * backbone.cfg.d_model
    step_threads = 1 if cfg.use_cache and step_flops < SINGLE_THREAD_STEP_FLOPS else torch.get_num_threads()
    for _ in range(cfg.max_new_tokens):
        logits = head(hidden[:, -1], output_table)  # (B, V)
        token = choose(logits, seen, cfg, generator)
        token = token.masked_fill(finished, pad_id)
        yield token
        if eos_id is not None:
            finished |= token == eos_id
        if bool(finished.all()):
            return
        seen = torch.cat([seen, token[:, None]], dim=1)
        mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)
        step_positions = positions[:, -1:] + 1
        positions = torch.cat([positions, step_positions], dim=1)
        if cache is not None:
            with threads(step_threads):
                hidden = backbone(token[:, None], mask, position_ids=step_positions, cache=cache)
        else:
            hidden = backbone(seen, mask, position_ids=positions)


def generate(
    model: Model, tokenizer: TextTokenizer, prompts: Sequence[str], cfg: GenerationConfig,
    *, on_text: Callable[[int, str], None] | None = None,
) -> list[str]:
    """The continuation of each prompt. ``on_text(row, piece)`` receives text as soon as it is decoded
    (streaming); a piece never ends inside a multi-byte character."""
    return generate_from_ids(model, tokenizer, tokenizer.encode(list(prompts), max_len=None), cfg, on_text=on_text)


def generate_from_ids(
    model: Model, tokenizer: TextTokenizer, rows: Sequence[Sequence[int]], cfg: GenerationConfig,
    *, on_text: Callable[[int, str], None] | None = None, eos_id: int | None = None,
) -> list[str]:
    """``generate`` for prompts given as token ids; ``eos_id`` ends a row (default: the tokenizer's [SEP])."""
    if eos_id is None:
        eos = tokenizer.roles.get("sep")
        eos_id = tokenizer.tokenizer.token_to_id(eos) if eos else None
    ids, mask = left_pad(rows, tokenizer.pad_id)
    new: list[list[int]] = [[] for _ in rows]
    texts = [""] * len(rows)
    done = [False] * len(rows)
    for token in generate_ids(model, ids, mask, cfg, eos_id=eos_id, pad_id=tokenizer.pad_id):
        for row, t in enumerate(token.tolist()):
            if done[row] or t == eos_id:
                done[row] = True
                continue
            new[row].append(t)
            text = tokenizer.decode_text(new[row])
            if text.endswith("\ufffd"):  # a character whose bytes have not all come yet
                continue
            hit = [text.index(s) for s in cfg.stop if s in text]
            if hit:
                text, done[row] = text[: min(hit)], True
            if on_text is not None and len(text) > len(texts[row]) and text.startswith(texts[row]):
                on_text(row, text[len(texts[row]) :])
            texts[row] = text
        if all(done):
            break
    return texts

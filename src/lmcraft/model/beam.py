"""Beam search for any decoder: a decoder-only model continuing prompts, or the decoder of an
encoder-decoder reading the encoder's output.

Greedy decoding keeps the one most likely next token; beam search keeps the ``k`` most likely partial
sequences (by summed log-probability) and extends each by every token at every step. A hypothesis that
ends (emits the end token) is set aside with the score

    score = sum of log-probabilities / length ** length_penalty

(Wu et al. 2016, GNMT); a penalty above 0 stops short outputs from winning merely for having fewer terms
in the sum. A row is done when ``k`` hypotheses have ended. With ``k = 1`` this is greedy decoding.

Prompts of different lengths are padded on the left, as in ``generate.generate_ids``, so that every row's
next token is at the last column; positions count real tokens only. The keys and values of the prompt
and of the tokens chosen so far stay in a ``KVCache``, whose rows follow their hypotheses when the beams
are reordered.

A ``Constraint`` may forbid hypotheses: one that ``may_extend`` refuses is dropped (the next best candidate
takes its place, however far down the ranking), and one that ``may_end`` refuses may not end there but is
set aside, to be used only if no hypothesis of its row ends allowed (an empty one last).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from lmcraft.model.transformer import KVCache, Transformer

Logits = Callable[[torch.Tensor], torch.Tensor]  # hidden states (N, D) -> next-token logits (N, V)


class Constraint(Protocol):
    """Which hypotheses beam search may keep. ``row`` is the prompt's index in the batch, ``tokens`` the new
    tokens of a hypothesis (for ``may_extend``, the candidate token last; for ``may_end``, without the end)."""

    def may_extend(self, row: int, tokens: list[int]) -> bool: ...

    def may_end(self, row: int, tokens: list[int]) -> bool: ...


@torch.inference_mode()
def beam_decode(
    decoder: Transformer, logits_of: Logits, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *,
    eos_id: int | None, num_beams: int = 4, max_new_tokens: int = 64, length_penalty: float = 1.0,
    memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None, no_repeat_ngram: int = 0,
    constraint: Constraint | None = None,
) -> list[list[int]]:
    """The best continuation of each prompt (B, T), left-padded with ``prompt_mask`` (B, T); ``memory``
    (B, S, D) and ``memory_mask`` (B, S) are the encoder's output for an encoder-decoder. With
    ``no_repeat_ngram`` n > 0 no hypothesis writes the same n tokens twice (a small model's beams otherwise
    fall into loops such as "会议会议会议"). A ``constraint`` says which hypotheses may go on and which may
    end. Returns the new tokens of each row, without the end token."""
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"need num_beams >= 1 and max_new_tokens >= 1 (got {num_beams}, {max_new_tokens})")
    batch, length = prompt_ids.shape
    if length + max_new_tokens > decoder.cfg.max_tokens:
        raise ValueError(f"prompt ({length}) + max_new_tokens ({max_new_tokens}) exceed the decoder's "
                         f"{decoder.cfg.max_tokens} positions")
    k = num_beams
    mask = prompt_mask.long()  # (B, T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): real tokens count from 0
    dtype = decoder.embed.token.weight.dtype
    cache = KVCache(decoder.cfg, batch, length + max_new_tokens, dtype=dtype)
    hidden = decoder(prompt_ids, mask, position_ids=positions, cache=cache, memory=memory,
                     memory_padding_mask=memory_mask)[:, -1]  # (B, D): the prompt is read once ...
    cache.repeat(k)  # ... and its keys and values shared by its K beams
    hidden, mask, positions = (x.repeat_interleave(k, 0) for x in (hidden, mask, positions))  # (B·K, ...)
    if memory is not None:
        memory = memory.repeat_interleave(k, 0)  # (B·K, S, D)
        memory_mask = memory_mask.repeat_interleave(k, 0) if memory_mask is not None else None
    scores = torch.full((batch, k), float("-inf"))
    scores[:, 0] = 0.0  # one live hypothesis per row at the start (the K copies of the prompt are equal)
    new = torch.zeros((batch * k, 0), dtype=torch.long)  # (B·K, t) tokens chosen so far
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]  # (score, tokens) per row
    refused: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]  # ended where the constraint says no
    pool = 2 * k if constraint is None else 4 * k  # candidates per row: K may end, more may be refused
    for step in range(max_new_tokens):
        log_probs = torch.log_softmax(logits_of(hidden).float(), dim=-1)  # (B·K, V)
        if no_repeat_ngram > 0 and new.shape[1] >= no_repeat_ngram:
            log_probs = _ban_repeats(log_probs, new, no_repeat_ngram)
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(min(pool, k * vocab), dim=-1)  # (B, pool)
        next_scores = torch.full((batch, k), float("-inf"))
        rows = torch.zeros((batch, k), dtype=torch.long)  # which hypothesis each new one extends
        next_tokens = torch.zeros((batch, k), dtype=torch.long)
        prefixes = new.tolist()  # (B·K, t): read once a step, not once a candidate
        for b in range(batch):
            if len(ended[b]) >= k:
                continue
            kept = 0
            for score, index in _ranked(candidates[b], top_scores[b], top_index[b], more=constraint is not None):
                beam, token = divmod(index, vocab)
                if score == float("-inf") or kept == k:
                    break
                if token == eos_id:
                    tokens = prefixes[b * k + beam]
                    allowed = constraint is None or constraint.may_end(b, tokens)
                    (ended if allowed else refused)[b].append((score / (step + 1) ** length_penalty, tokens))
                    continue
                if constraint is not None and not constraint.may_extend(b, [*prefixes[b * k + beam], token]):
                    continue
                next_scores[b, kept], rows[b, kept], next_tokens[b, kept] = score, b * k + beam, token
                kept += 1
        if all(len(e) >= k for e in ended) or step == max_new_tokens - 1:
            new = torch.cat([new[rows.view(-1)], next_tokens.view(-1, 1)], dim=1)
            scores = next_scores
            break
        index = rows.view(-1)  # (B·K,)
        cache.reorder(index)
        mask, positions = mask[index], positions[index]
        new = torch.cat([new[index], next_tokens.view(-1, 1)], dim=1)
        scores = next_scores
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step_positions = positions[:, -1:] + 1
        positions = torch.cat([positions, step_positions], dim=1)
        hidden = decoder(next_tokens.view(-1, 1), mask, position_ids=step_positions, cache=cache, memory=memory,
                         memory_padding_mask=memory_mask)[:, -1]
    n = new.shape[1]
    for b in range(batch):
        if len(ended[b]) < k:  # the length limit came first: the live hypotheses count too
            live = [(float(scores[b, j]) / max(n, 1) ** length_penalty, new[b * k + j].tolist())
                    for j in range(k) if scores[b, j] > float("-inf")]
            ended[b] += [h for h in live if constraint is None or constraint.may_end(b, h[1])]
            if not ended[b]:  # nothing ended as the constraint allows: the best of what there is, not nothing
                ended[b] = [h for h in refused[b] + live if h[1]] or refused[b] + live
    return [max(e, key=lambda item: item[0])[1] if e else [] for e in ended]


def _ranked(row: torch.Tensor, top_scores: torch.Tensor, top_index: torch.Tensor, *,
            more: bool) -> Iterator[tuple[float, int]]:
    """(score, index) of a row's candidates (K·V,), best first: the ``topk`` already taken, then, with ``more``
    (a constraint may refuse them all), every other candidate, sorted only if it comes to that."""
    yield from zip(top_scores.tolist(), top_index.tolist(), strict=True)
    if more and top_index.numel() < row.numel():
        taken = set(top_index.tolist())
        rest_scores, rest_index = row.sort(descending=True)
        yield from ((score, index) for score, index in zip(rest_scores.tolist(), rest_index.tolist(), strict=True)
                    if index not in taken)


def _ban_repeats(log_probs: torch.Tensor, new: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for every token that would complete an n-gram the row has written already; ``new`` (R, t)."""
    rows = new.tolist()
    for r, tokens in enumerate(rows):
        prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]
        if banned:
            log_probs[r, banned] = float("-inf")
    return log_probs

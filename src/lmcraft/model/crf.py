"""A linear-chain conditional random field over per-word tag scores (Lafferty et al. 2001).

A tagger that picks each word's tag on its own can produce sequences no scheme allows (``O I-PER``); a CRF
adds a learned score for every tag-to-tag transition and scores whole sequences:

    score(y) = start[y_1] + Σ_t emit[t, y_t] + Σ_t trans[y_{t-1}, y_t] + end[y_n]
    p(y | x) = exp(score(y)) / Σ_y' exp(score(y'))

The normaliser comes from the forward algorithm and the best sequence from Viterbi, both O(n·C²).
Sequences are right-padded; ``mask`` marks the real positions, a prefix of every row.

Bound to a tag scheme (``scheme_rules``), the CRF also knows which tag may not follow which (``O I-PER``;
``B-PER O`` under BIOES) and gives such a step a fixed score of ``FORBIDDEN``: training normalises over the
other sequences only and Viterbi never returns one with such a step. Left to learn this, the transition
scores, trained at the encoder's small learning rate, stay too weak for many passes (docs/tasks.md). How a
sequence may start and end stays learnt, since a long sentence is cut into pieces that may begin or end
inside an entity (and a rule there would give such a piece's true tags a score of -10,000).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FORBIDDEN = -10_000.0  # the score of a transition the scheme rules out: exp() of it is 0 in float32


def scheme_rules(labels: Sequence[str], scheme: str) -> torch.Tensor:
    """Which tag may follow which, (C, C) bools [from, to], for tags named ``O``, ``B-X``, ``I-X`` and (BIOES)
    ``E-X``, ``S-X``. BIO: ``I-X`` only after ``B-X`` or ``I-X``. BIOES: ``I-X`` and ``E-X`` only after ``B-X``
    or ``I-X``, and after those only ``I-X`` or ``E-X``."""
    if scheme not in ("BIO", "BIOES"):
        raise ValueError(f"a CRF knows the rules of the BIO and BIOES schemes, not {scheme!r}")
    parts = [("O", "") if name == "O" else (name[0], name[2:]) for name in labels]
    if bad := [name for name, (prefix, _) in zip(labels, parts, strict=True) if prefix not in scheme]:
        raise ValueError(f"tag {bad[0]!r} does not belong to the {scheme} scheme")
    continues = {"I"} if scheme == "BIO" else {"I", "E"}  # the tags that carry on an open entity
    opens = {"B", "I"}  # the tags after which an entity may go on (under BIOES: must)

    def may_follow(before: tuple[str, str], after: tuple[str, str]) -> bool:
        if after[0] in continues:
            return before[0] in opens and before[1] == after[1]
        return scheme == "BIO" or before[0] not in opens

    return torch.tensor([[may_follow(a, b) for b in parts] for a in parts])


class CRF(nn.Module):
    def __init__(self, n_tags: int, allowed: torch.Tensor | None = None) -> None:
        """``allowed``: (C, C) bools [from, to], which tag may follow which (``scheme_rules``); None: any."""
        super().__init__()
        self.start = nn.Parameter(torch.zeros(n_tags))  # (C,) score of starting with each tag
        self.end = nn.Parameter(torch.zeros(n_tags))  # (C,) score of ending with each tag
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))  # (C, C) [from, to]
        ok = torch.ones(n_tags, n_tags, dtype=torch.bool) if allowed is None else allowed
        # not saved with the weights: the scheme rebuilds it, so models saved without it still load
        self.register_buffer("forbidden", torch.where(ok, 0.0, FORBIDDEN), persistent=False)  # (C, C)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """start (C,), transitions (C, C) and end (C,) scores, the scheme's forbidden steps included."""
        return self.start, self.transitions + self.forbidden, self.end

    def sequence_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """score(y) of the given tag sequences. emissions (B, N, C); tags (B, N) long; mask (B, N) bool."""
        start, transitions, end = self.scores()
        m = mask.to(emissions.dtype)  # (B, N)
        emit = emissions.gather(-1, tags[..., None]).squeeze(-1)  # (B, N)
        trans = transitions[tags[:, :-1], tags[:, 1:]]  # (B, N-1)
        last = mask.sum(1) - 1  # (B,) index of each row's last real position
        last_tags = tags.gather(1, last[:, None]).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + end[last_tags]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Σ_y exp(score(y)) by the forward algorithm. emissions (B, N, C); mask (B, N) -> (B,)."""
        start, transitions, end = self.scores()
        alpha = start + emissions[:, 0]  # (B, C): log-sum of all paths ending in each tag
        for t in range(1, emissions.shape[1]):
            step = alpha[:, :, None] + transitions + emissions[:, t, None, :]  # (B, C_from, C_to)
            alpha = torch.where(mask[:, t, None], step.logsumexp(1), alpha)
        return (alpha + end).logsumexp(1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(tags | emissions) per sequence, (B,). Positions outside ``mask`` may hold any tag."""
        emissions = emissions.float()
        tags = tags.masked_fill(~mask, 0)
        return self.log_partition(emissions, mask) - self.sequence_score(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The highest-scoring tag sequence of every row (Viterbi), as many tags as real positions."""
        emissions = emissions.float()
        start, transitions, end = self.scores()
        best = start + emissions[:, 0]  # (B, C): best score of a path ending in each tag
        back = []
        for t in range(1, emissions.shape[1]):
            step = best[:, :, None] + transitions  # (B, C_from, C_to)
            score, previous = step.max(1)  # (B, C_to)
            best = torch.where(mask[:, t, None], score + emissions[:, t], best)
            back.append(previous)
        best = best + end
        lengths = mask.sum(1).tolist()
        paths = []
        for b, length in enumerate(lengths):
            tag = int(best[b].argmax())
            path = [tag]
            for t in range(length - 1, 0, -1):  # back-pointers of step t lead from position t to t-1
                tag = int(back[t - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths

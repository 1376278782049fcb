"""A linear-chain conditional random field over per-word tag scores (Lafferty et al. 2001).

A tagger that picks each word's tag on its own can produce sequences no scheme allows (``O I-PER``); a CRF
adds a learned score for every tag-to-tag transition and scores whole sequences:

    score(y) = start[y_1] + Σ_t emit[t, y_t] + Σ_t trans[y_{t-1}, y_t] + end[y_n]
    p(y | x) = exp(score(y)) / Σ_y' exp(score(y'))

The normaliser comes from the forward algorithm and the best sequence from Viterbi, both O(n·C²).
Sequences are right-padded; ``mask`` marks the real positions, a prefix of every row.
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, n_tags: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(n_tags))  # (C,) score of starting with each tag
        self.end = nn.Parameter(torch.zeros(n_tags))  # (C,) score of ending with each tag
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))  # (C, C) [from, to]

    def sequence_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """score(y) of the given tag sequences. emissions (B, N, C); tags (B, N) long; mask (B, N) bool."""
        m = mask.to(emissions.dtype)  # (B, N)
        emit = emissions.gather(-1, tags[..., None]).squeeze(-1)  # (B, N)
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, N-1)
        last = mask.sum(1) - 1  # (B,) index of each row's last real position
        last_tags = tags.gather(1, last[:, None]).squeeze(1)  # (B,)
        return self.start[tags[:, 0]] + (emit * m).sum(1) + (trans * m[:, 1:]).sum(1) + self.end[last_tags]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Σ_y exp(score(y)) by the forward algorithm. emissions (B, N, C); mask (B, N) -> (B,)."""
        alpha = self.start + emissions[:, 0]  # (B, C): log-sum of all paths ending in each tag
        for t in range(1, emissions.shape[1]):
            step = alpha[:, :, None] + self.transitions + emissions[:, t, None, :]  # (B, C_from, C_to)
            alpha = torch.where(mask[:, t, None], step.logsumexp(1), alpha)
        return (alpha + self.end).logsumexp(1)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-log p(tags | emissions) per sequence, (B,). Positions outside ``mask`` may hold any tag."""
        emissions = emissions.float()
        tags = tags.masked_fill(~mask, 0)
        return self.log_partition(emissions, mask) - self.sequence_score(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The highest-scoring tag sequence of every row (Viterbi), as many tags as real positions."""
        emissions = emissions.float()
        best = self.start + emissions[:, 0]  # (B, C): best score of a path ending in each tag
        back = []
        for t in range(1, emissions.shape[1]):
            step = best[:, :, None] + self.transitions  # (B, C_from, C_to)
            score, previous = step.max(1)  # (B, C_to)
            best = torch.where(mask[:, t, None], score + emissions[:, t], best)
            back.append(previous)
        best = best + self.end
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

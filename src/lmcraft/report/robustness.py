"""Behavioural tests after CheckList (Ribeiro et al. 2020): perturb the texts, ask the model again.

- invariance: a change that should not move the label (a typo, punctuation, character width, simplified ↔
  traditional script, swapped names or gendered words); the failure rate is the share of the changed texts
  whose predicted label changed.
- directional: a change with a known direction (a negative phrase added must not make the positive class
  more likely); the failure rate is the share where the probability moved the wrong way.
- group gaps: for word swaps between two groups (male / female names and words), the positive rate of the
  texts as written about group A minus that of the same texts written about group B.

What the perturbations are is data (``checklist.yaml``, extended by ``--checklist FILE.yaml``); the code
only knows the kinds of change. The model is a function of texts, so any classifier (or a stub) is tested.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lmcraft.text import has_han

Classify = Callable[[Sequence[int], Sequence[str]], np.ndarray]  # (example indices, new texts) -> probs (n, C)
Perturb = Callable[[str, random.Random], str]
BUILTIN = Path(__file__).with_name("checklist.yaml")
N_EXAMPLES = 5  # failures shown per test


def load_checklist(extra: str | Path | None = None) -> dict[str, Any]:
    """The built-in perturbations, with those of ``extra`` added."""
    suite = yaml.safe_load(BUILTIN.read_text(encoding="utf-8"))
    if extra:
        more = yaml.safe_load(Path(extra).read_text(encoding="utf-8")) or {}
        unknown = set(more) - {"positive_labels", "invariance", "directional"}
        if unknown:
            raise ValueError(f"{extra}: unknown sections {sorted(unknown)}; use positive_labels, invariance, "
                             "directional")
        for key in ("positive_labels", "invariance", "directional"):
            suite[key] = list(suite.get(key) or []) + list(more.get(key) or [])
    return suite


def _letters(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch.isalnum()]


def swap_chars(text: str, rng: random.Random) -> str:
    spots = [i for i in _letters(text) if i + 1 < len(text) and text[i + 1].isalnum() and text[i] != text[i + 1]]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def drop_char(text: str, rng: random.Random) -> str:
    spots = _letters(text)
    if len(spots) < 2:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1 :]


def strip_punctuation(text: str, rng: random.Random) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def width(text: str, rng: random.Random) -> str:
    """Full-width forms to half-width (NFKC), or printable ASCII to full-width when the text has none."""
    if any(0xFF01 <= ord(ch) <= 0xFF5E or ch == "\u3000" for ch in text):
        return "".join(unicodedata.normalize("NFKC", ch) if 0xFF01 <= ord(ch) <= 0xFF5E or ch == "\u3000" else ch
                       for ch in text)
    return "".join(chr(ord(ch) + 0xFEE0) if 0x21 <= ord(ch) <= 0x7E else ch for ch in text)


@cache
def _opencc(config: str) -> Any:
    try:
        import opencc
    except ImportError as e:
        raise ImportError("simplified ↔ traditional tests need OpenCC: pip install 'lmcraft[report]'") from e
    return opencc.OpenCC(config)


def _words(words: Sequence[str]) -> re.Pattern[str]:
    """Any of ``words``: Chinese ones anywhere, alphabetic ones as whole words in any case; longest first
    (男朋友 before 男人 before 他)."""
    parts = [re.escape(w) if has_han(w) else rf"\b{re.escape(w)}(?!\w)" for w in sorted(words, key=len, reverse=True)]
    return re.compile("|".join(parts), re.IGNORECASE)


def _swapper(pairs: Sequence[Sequence[str]]) -> tuple[re.Pattern[str], Callable[[re.Match[str]], str]]:
    """A pattern of every word of ``pairs`` and the replacement of a match by its partner, capitalised as the
    match was."""
    mapping: dict[str, str] = {}
    for a, b in pairs:
        mapping.setdefault(a.lower(), b)
        mapping.setdefault(b.lower(), a)

    def partner(match: re.Match[str]) -> str:
        word = match.group(0)
        other = mapping[word.lower()]
        return other[:1].upper() + other[1:] if word[:1].isupper() and not has_han(word) else other

    return _words(list(mapping)), partner


def perturbation(test: dict[str, Any]) -> Perturb:
    """The function a test entry of the YAML names by its ``kind``."""
    kind = test.get("kind")
    if kind == "opencc":
        converter = _opencc(str(test.get("config", "s2t")))
        return lambda text, rng: converter.convert(text)
    if kind == "swap_words":
        pattern, partner = _swapper(test["pairs"])
        return lambda text, rng: pattern.sub(partner, text)
    if kind == "suffix":
        texts = test["texts"]
        return lambda text, rng: text + rng.choice(texts["zh" if has_han(text) else "en"])
    simple = {"swap_chars": swap_chars, "drop_char": drop_char, "strip_punctuation": strip_punctuation,
              "width": width}
    if kind not in simple:
        raise ValueError(f"checklist test {test.get('name')!r}: unknown kind {kind!r}; use one of "
                         f"{sorted([*simple, 'opencc', 'swap_words', 'suffix'])}")
    return simple[kind]


def positive_class(labels: Sequence[str], suite: dict[str, Any]) -> int | None:
    names = {str(x).lower() for x in suite.get("positive_labels") or []}
    found = [i for i, name in enumerate(labels) if name.lower() in names]
    return found[0] if len(found) == 1 else None


def _perturbed(test: dict[str, Any], texts: Sequence[str], seed: int) -> tuple[list[int], list[str]]:
    change = perturbation(test)
    rng = random.Random(seed)
    idx, new = [], []
    for i, text in enumerate(texts):
        changed = change(text, rng)
        if changed != text:
            idx.append(i)
            new.append(changed)
    return idx, new


def _group_gap(test: dict[str, Any], texts: Sequence[str], idx: list[int], before: np.ndarray, after: np.ndarray,
               positive: int) -> dict[str, Any] | None:
    """Positive rate written about group A minus written about group B, over the texts that name one group."""
    groups = test.get("groups")
    if not groups:
        return None
    pattern_a, pattern_b = _words([a for a, _ in test["pairs"]]), _words([b for _, b in test["pairs"]])
    rate_a, rate_b = [], []
    for k, i in enumerate(idx):
        has_a, has_b = bool(pattern_a.search(texts[i])), bool(pattern_b.search(texts[i]))
        if has_a == has_b:
            continue  # names both groups, or neither (a match the groups do not split)
        pos_orig, pos_swap = before[k].argmax() == positive, after[k].argmax() == positive
        rate_a.append(pos_orig if has_a else pos_swap)
        rate_b.append(pos_swap if has_a else pos_orig)
    if not rate_a:
        return None
    a, b = float(np.mean(rate_a)), float(np.mean(rate_b))
    return {"groups": list(groups), "n": len(rate_a), f"positive_rate_{groups[0]}": a,
            f"positive_rate_{groups[1]}": b, "gap": a - b}


def run_checklist(texts: Sequence[str], classify: Classify, labels: Sequence[str], suite: dict[str, Any], *,
                  seed: int = 0, base: np.ndarray | None = None) -> dict[str, Any]:
    """Every test of ``suite`` on ``texts``; ``base`` holds the probabilities of the unperturbed texts."""
    base = classify(range(len(texts)), texts) if base is None else base
    positive = positive_class(labels, suite)
    results: dict[str, Any] = {"n": len(texts), "positive_label": None if positive is None else labels[positive],
                               "invariance": [], "directional": []}
    for t, test in enumerate(suite.get("invariance") or []):
        idx, new = _perturbed(test, texts, seed + t)
        after = classify(idx, new) if new else np.zeros((0, len(labels)))
        before = base[idx]
        failed = np.flatnonzero(before.argmax(1) != after.argmax(1)) if new else np.array([], dtype=int)
        row: dict[str, Any] = {"name": test.get("name", test["kind"]), "kind": test["kind"], "n_changed": len(idx),
                               "n_failed": len(failed),
                               "failure_rate": float(len(failed) / len(idx)) if idx else None,
                               "examples": [{"text": texts[idx[k]], "perturbed": new[k],
                                             "before": labels[int(before[k].argmax())],
                                             "after": labels[int(after[k].argmax())]} for k in failed[:N_EXAMPLES]]}
        if positive is not None and new:
            gap = _group_gap(test, texts, idx, before, after, positive)
            if gap is not None:
                row["group_gap"] = gap
        results["invariance"].append(row)
    for t, test in enumerate(suite.get("directional") or []):
        if positive is None:
            results["directional"].append({"name": test.get("name"), "skipped": "no positive label among "
                                           f"{list(labels)} (positive_labels in the checklist YAML)"})
            continue
        if test.get("expect", "not_more_positive") != "not_more_positive":
            raise ValueError(f"directional test {test.get('name')!r}: the expectation it can check is "
                             "not_more_positive")
        idx, new = _perturbed(test, texts, seed + 1000 + t)
        after = classify(idx, new) if new else np.zeros((0, len(labels)))
        rise = after[:, positive] - base[idx, positive] if new else np.zeros(0)
        failed = np.flatnonzero(rise > float(test.get("tolerance", 0.0)))
        results["directional"].append({
            "name": test.get("name", test["kind"]), "expect": test.get("expect", "not_more_positive"),
            "n_changed": len(idx), "n_failed": len(failed),
            "failure_rate": float(len(failed) / len(idx)) if idx else None,
            "examples": [{"text": texts[idx[k]], "perturbed": new[k], "positive_before": float(base[idx[k], positive]),
                          "positive_after": float(after[k, positive])} for k in failed[:N_EXAMPLES]]})
    return results

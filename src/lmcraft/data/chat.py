"""Conversations: the in-memory form, the chat JSONL format, and the chatterbot-corpus dialogues.

Chat JSONL holds one conversation a line::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}

An optional system message first, then user and assistant turns alternating, starting with the user, with at
least one assistant turn. Anything else is a ``DataError`` naming the file, the line and the field.

chatterbot-corpus (``chatterbot_corpus/data/<language>/*.yml``) stores ``conversations:`` as lists of
strings, the user speaking first and the two sides alternating. Its files are read with YAML's base loader,
so every scalar stays the text that was written ("yes" stays "yes", not True; "1.0" stays "1.0"). An entry
that is not text (a nested list or a mapping) makes the conversation unusable, and it is skipped and
counted; a trailing user turn with no answer is dropped.

The built-ins ``chatterbot-en`` and ``chatterbot-zh`` write every conversation of the language's files,
deduplicated, split 80/10/10 by a hash of the first user message: one prompt often has several answers
("What is AI?"), and they must all fall in the same split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmcraft.data.errors import DataError
from lmcraft.data.readers import jsonl_records, write_jsonl
from lmcraft.data.seq2seq import Pair
from lmcraft.data.split import SPLITS, split_of

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]  # a list is accepted and stored as a tuple, so conversations can be deduplicated
    line: int = field(default=0, compare=False)  # line of the source file, for error messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))

    def to_record(self) -> dict[str, object]:
        return {"messages": [{"role": t.role, "content": t.content} for t in self.turns]}

    @property
    def first_user(self) -> str:
        return next(t.content for t in self.turns if t.role == "user")


def check_turns(turns: tuple[Turn, ...], *, prompt: bool = False) -> str | None:
    """What is wrong with the order of ``turns``, or None: an optional system turn, then user / assistant
    alternating from the user, with at least one assistant turn (``prompt``: ending with a user turn, the
    conversation so far that a model answers)."""
    body = turns[1:] if turns and turns[0].role == "system" else turns
    for k, turn in enumerate(body):
        expected = "user" if k % 2 == 0 else "assistant"
        if turn.role != expected:
            where = k + (len(turns) - len(body))
            return f"message {where} is {turn.role!r} where {expected!r} was expected (roles must alternate " \
                   f"user, assistant, ... after an optional leading system message)"
    if prompt:
        return None if body and body[-1].role == "user" else "the conversation must end with a user message"
    if not any(t.role == "assistant" for t in body):
        return "the conversation has no assistant message"
    return None


def read_chat_jsonl(path: str | Path, encoding: str = "auto") -> list[Conversation]:
    """All conversations of a chat JSONL file."""
    path = Path(path)
    conversations = [conversation_from_record(path, number, record)
                     for number, record in jsonl_records(path, encoding)]
    if not conversations:
        raise DataError(path, "the file holds no conversations")
    return conversations


def conversation_from_record(path: Path, number: int, record: dict, *, prompt: bool = False) -> Conversation:
    """One record ``{"messages": [{"role", "content"}, ...]}``; ``prompt``: a conversation to answer."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        present = ", ".join(repr(k) for k in record) or "none"
        raise DataError(path, f"missing, empty or not a list of messages (fields present: {present})", line=number,
                        field="messages")
    turns = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(path, f"message {k} is a {type(message).__name__}, not an object with 'role' and "
                                  f"'content'", line=number, field="messages")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            what = "has no 'role'" if role is None else f"has the unknown role {role!r}"
            raise DataError(path, f"message {k} {what}; roles are {', '.join(ROLES)}", line=number, field="role")
        if not isinstance(content, str) or not content.strip():
            raise DataError(path, f"message {k} has no text 'content'", line=number, field="content")
        if role == "system" and k > 0:
            raise DataError(path, f"message {k}: a system message may only come first", line=number, field="role")
        turns.append(Turn(role, content))
    problem = check_turns(tuple(turns), prompt=prompt)
    if problem:
        raise DataError(path, problem, line=number, field="messages")
    return Conversation(tuple(turns), number)


def read_chatterbot(path: str | Path) -> tuple[list[Conversation], Counter[str]]:
    """The conversations of one chatterbot-corpus YAML file, and what was skipped or trimmed (by reason)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # builds no objects: safe
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, f"malformed YAML: {getattr(e, 'problem', e)}",
                        line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
        raise DataError(path, "expected a mapping with a 'conversations' list", field="conversations")
    conversations, skipped = [], Counter[str]()
    for k, entries in enumerate(data["conversations"]):
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            skipped["not_a_list_of_texts"] += 1
            continue
        texts = [" ".join(e.split()) for e in entries]
        if not all(texts):
            skipped["empty_turn"] += 1
            continue
        if len(texts) % 2:
            texts = texts[:-1]
            skipped["trailing_user_turn"] += 1
        if not texts:
            skipped["no_answer"] += 1
            continue
        turns = tuple(Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts))
        conversations.append(Conversation(turns, k))
    return conversations, skipped


def chat_pairs(conversations: list[Conversation]) -> list[Pair]:
    """Every (user message → the assistant's answer) of the conversations, for single-turn baselines."""
    pairs = []
    for c in conversations:
        for prompt, answer in zip(c.turns, c.turns[1:], strict=False):
            if prompt.role == "user" and answer.role == "assistant":
                pairs.append(Pair(prompt.content, answer.content, c.line))
    return pairs


CHATTERBOT_LANGUAGES = {"en": "english", "zh": "chinese"}


def prepare_chatterbot(src: Path, out: Path, *, language: str) -> dict[str, object]:
    """The ``chatterbot-<language>`` built-in: ``src`` is the installed ``chatterbot_corpus`` package."""
    from lmcraft.fsutil import sha256_of

    folder = src / "data" / CHATTERBOT_LANGUAGES[language]
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise DataError(folder, "holds no .yml files; is chatterbot-corpus==1.3.3 installed completely?")
    seen: set[Conversation] = set()
    by_split: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    per_file: dict[str, dict[str, int]] = {}
    skipped: Counter[str] = Counter()
    for path in files:
        conversations, problems = read_chatterbot(path)
        skipped += problems
        kept = 0
        for c in conversations:
            if c in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(c)
            kept += 1
            by_split[split_of(c.first_user)].append(c)
        per_file[path.name] = {"conversations": len(conversations), "kept": kept}
    for split, rows in by_split.items():
        write_jsonl(out / f"{split}.jsonl", [c.to_record() for c in rows])
    return {"task": "chat", "language": language, "files": {s: f"{s}.jsonl" for s in SPLITS},
            "counts": {s: {"conversations": len(rows), "turns": sum(len(c.turns) for c in rows)}
                       for s, rows in by_split.items()},
            "dropped": dict(sorted(skipped.items())), "per_file": per_file,
            "sources": {p.name: sha256_of(p) for p in files}}

"""Multi-turn dialogue: the chat template, and the ``chat`` task that fine-tunes a decoder on conversations.

The template is how a conversation is written for the model, here and in ``lmcraft chat``
(``lmcraft/chat.py``): each turn opens with its role token and an assistant turn ends with [SEP],

    <|system|> …  <|user|> …  <|assistant|> … [SEP]  <|user|> …  <|assistant|> … [SEP]

The loss falls on the assistant's words (and the [SEP] after each) only: the model learns to answer, not to
imitate the user. A conversation is one causal sequence with several prompt and target segments, so chat
always uses the decoder layout (``layouts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lmcraft.data.chat import Conversation, Turn, conversation_from_record, read_chat_jsonl
from lmcraft.data.readers import Fields
from lmcraft.tasks.contract import HeadSpec, Splits, labelled_text
from lmcraft.tasks.seq2seq.layouts import DecoderLayout, GenItem, Segment, end_target
from lmcraft.tasks.seq2seq.options import GenerationOptions
from lmcraft.tasks.seq2seq.task import Seq2Seq, flat_report
from lmcraft.tokenizer import TextTokenizer

ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


@dataclass(frozen=True)
class ChatTemplate:
    """Conversations as token ids: role tokens, and [SEP] after each assistant turn."""

    role_ids: dict[str, int]  # the token id of each role token
    eos_id: int  # the [SEP] that ends an assistant turn

    @staticmethod
    def role_ids_of(tokenizer: TextTokenizer) -> dict[str, int]:
        roles = {role: tokenizer.tokenizer.token_to_id(token) for role, token in ROLE_TOKENS.items()}
        if None in roles.values():
            raise ValueError(f"the tokenizer lacks the role tokens {list(ROLE_TOKENS.values())}; fine-tuning adds them")
        return roles

    def segments(self, tokenizer: TextTokenizer, turns: Sequence[Turn], *, max_len: int,
                 max_answer: int) -> list[Segment]:
        """The turns as prompt and target segments (an assistant's answer, cut to ``max_answer`` tokens, is a
        target). A conversation longer than ``max_len`` loses its earliest exchanges (a system message stays);
        what is still too long is cut by the layout, from the left."""
        texts = tokenizer.encode([t.content for t in turns], max_len=None, special_tokens=False)
        written: list[list[Segment]] = []  # one list per turn
        for turn, ids in zip(turns, texts, strict=True):
            if turn.role == "assistant":
                written.append([([self.role_ids["assistant"]], False),
                                (end_target(ids, max_answer, max_len, self.eos_id), True)])
            else:
                written.append([([self.role_ids[turn.role], *ids], False)])
        system = written[:1] if turns[0].role == "system" else []
        rest = written[len(system):]
        while len(rest) > 2 and sum(len(ids) for turn in system + rest for ids, _ in turn) > max_len:
            rest = rest[2:]  # drop the oldest user/assistant exchange
        return [segment for turn in system + rest for segment in turn]

    def prompt(self, tokenizer: TextTokenizer, turns: Sequence[Turn], *, max_len: int, room: int,
               max_answer: int) -> list[int]:
        """The conversation so far (ending with a user turn) and the assistant's role token: what the model
        continues with its answer. Its last ``room`` tokens, of a conversation fitted to ``max_len``."""
        ids = [t for part, _ in self.segments(tokenizer, turns, max_len=max_len, max_answer=max_answer)
               for t in part][-max_len:]
        return [*ids, self.role_ids["assistant"]][-room:]


@dataclass
class Chat(Seq2Seq):
    """Multi-turn dialogue: conversations with role tokens, the loss on the assistant's turns."""

    name: ClassVar[str] = "chat"
    description: ClassVar[str] = "multi-turn dialogue, the loss on the assistant's turns"
    extensions: ClassVar[tuple[str, ...]] = (".jsonl",)
    special_tokens: ClassVar[tuple[str, ...]] = tuple(ROLE_TOKENS.values())
    scores_placeholders: ClassVar[bool] = False
    converses: ClassVar[bool] = True

    role_ids: dict[str, int] | None = None  # the token id of each role token

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.role_ids or not self.strategy.multi_segment:
            raise ValueError("chat needs the decoder layout and the role tokens")
        self.template = ChatTemplate(dict(self.role_ids), self.eos_id)

    # -- data ------------------------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path, fields: Fields, *, labelled: bool = True) -> list[Any]:
        return read_chat_jsonl(path, fields.encoding)

    @classmethod
    def for_data(cls, splits: Splits, files: dict[str, Path], tokenizer: TextTokenizer, options: GenerationOptions,
                 *, metric: str, fields: Fields) -> Seq2Seq:
        if options.memory:
            raise ValueError("--memory appends a translation memory's target to a seq2seq source; a chat model reads "
                             "conversations (use --task seq2seq)")
        roles = ChatTemplate.role_ids_of(tokenizer)
        return cls._with_options(tokenizer, options, metric, layout=DecoderLayout.name, role_ids=roles)

    @classmethod
    def texts(cls, examples: Sequence[Conversation]) -> list[str]:
        return [turn.content for ex in examples for turn in ex.turns]

    @classmethod
    def wants_decoder(cls, options: GenerationOptions) -> bool:
        return True

    @classmethod
    def continues_head(cls, options: GenerationOptions) -> str | None:
        return "lm"

    @classmethod
    def parse_input(cls, value: str | dict[str, Any], fields: Fields, line: int = 0) -> Conversation:
        """A text is a first user message; an object holds ``messages`` (role and content each)."""
        if isinstance(value, dict) and "messages" in value:
            return conversation_from_record(Path("<input>"), line, value, prompt=True)
        return Conversation((Turn("user", labelled_text(value, fields.text_field)),), line=line)

    @staticmethod
    def baseline(splits: Splits, files: dict[str, Path]) -> dict[str, Any]:
        from lmcraft.tasks.seq2seq.baseline import baseline_report

        return {"name": "the answer to the nearest training prompt (retrieval)",
                "test": flat_report(baseline_report(splits["train"], splits["test"], kind="chat"))}

    # -- the saved head ----------------------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: HeadSpec, pad_id: int) -> Chat:
        return cls(pad_id, **cls._saved_settings(spec), role_ids=spec.settings.get("role_ids"))

    def head_spec(self) -> HeadSpec:
        spec = super().head_spec()
        return HeadSpec(spec.kind, spec.task, {**spec.settings, "role_ids": dict(self.template.role_ids)})

    # -- the input format: conversations -----------------------------------------------------------------------

    def encode(self, tokenizer: TextTokenizer, examples: Sequence[Any], max_len: int) -> list[GenItem]:
        return [self.strategy.sequence(self.template.segments(tokenizer, ex.turns, max_len=max_len,
                                                              max_answer=self.max_target_tokens), max_len)
                for ex in examples]

    def prompt_ids(self, tokenizer: TextTokenizer, prompts: Sequence[Any], max_len: int) -> list[list[int]]:
        """The conversations so far (each ending with a user turn), cut to leave room for ``max_target_tokens``
        new tokens."""
        return [self.template.prompt(tokenizer, turns, max_len=max_len, room=self._prompt_room(max_len),
                                     max_answer=self.max_target_tokens) for turns in prompts]

    def _longest_output(self, rows: list[list[int]]) -> int:
        return self.max_target_tokens + 1  # an answer's length does not follow its prompt's

    def prompts_and_references(self, examples: Sequence[Any]) -> tuple[list[Any], list[str], list[str]]:
        """One test case per assistant turn, with the turns before it as the prompt and the user's last
        message as the readable source."""
        prompts, references, shown = [], [], []
        for ex in examples:
            for k, turn in enumerate(ex.turns):
                if turn.role == "assistant":
                    prompts.append(ex.turns[:k])
                    references.append(turn.content)
                    shown.append(ex.turns[k - 1].content)
        return prompts, references, shown

    def prediction_inputs(self, examples: Sequence[Any]) -> tuple[list[Any], list[str]]:
        return [ex.turns for ex in examples], [ex.turns[-1].content for ex in examples]

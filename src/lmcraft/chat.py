"""``lmcraft chat MODEL_DIR``: talk to a fine-tuned dialogue model in the terminal.

Each user line is added to the conversation, the conversation is written with the chat template the model
was trained on (role tokens, ``tasks/seq2seq/chat.py``), and the answer is printed token by token as it is
generated (with the KV cache). The conversation keeps growing until it no longer fits the model's
positions; then its oldest exchanges are left out of the prompt.

Commands at the prompt: ``/reset`` starts a new conversation, ``/quit`` (or an empty line at the end of
input, Ctrl-D) leaves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from lmcraft.data.chat import Turn
from lmcraft.inference.predictor import Predictor
from lmcraft.model.generate import GenerationConfig, generate_from_ids
from lmcraft.tasks.seq2seq.chat import Chat


def chat_predictor(model_dir: str | Path) -> Predictor:
    """A model fine-tuned with ``--task chat``; a clear error for any other model."""
    predictor = Predictor(model_dir)
    if not isinstance(predictor.task, Chat):
        raise ValueError(f"this model was not fine-tuned for dialogue (it is a {predictor.task.name} model); "
                         "fine-tune a decoder with `lmcraft finetune --task chat` first")
    return predictor


@dataclass
class ChatSession:
    """A conversation with a chat model; ``reply`` adds a user turn and returns (and streams) the answer."""

    predictor: Predictor
    generation: GenerationConfig
    system: str = ""  # an optional system message that opens the conversation

    def __post_init__(self) -> None:
        self.model, self.tokenizer, self.task = self.predictor.model, self.predictor.tokenizer, self.predictor.task
        self.turns: list[Turn] = []
        self.reset()

    def reset(self) -> None:
        self.turns = [Turn("system", self.system)] if self.system else []

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        self.turns.append(Turn("user", text))
        # prompt_ids leaves room for max_target_tokens new tokens; leave room for max_new_tokens instead
        limit = self.model.backbone.cfg.max_tokens - self.generation.max_new_tokens + self.task.max_target_tokens
        prompt = self.task.prompt_ids(self.tokenizer, [self.turns], limit)[0]  # the task's chat template
        answer = generate_from_ids(self.model, self.tokenizer, [prompt], self.generation, eos_id=self.task.eos_id,
                                    on_text=(lambda _row, piece: on_text(piece)) if on_text else None)[0]
        self.turns.append(Turn("assistant", answer))
        return answer


def run_chat(session: ChatSession, *, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> int:
    """The terminal loop: read a line, stream the answer, until /quit or the end of input."""
    print("lmcraft chat: type a message; /reset starts over, /quit leaves.", file=out)
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            print(file=out)
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.reset()
            print("(new conversation)", file=out)
            continue
        if not line:
            continue
        print("bot> ", end="", file=out, flush=True)
        session.reply(line, on_text=lambda piece: print(piece, end="", file=out, flush=True))
        print(file=out, flush=True)

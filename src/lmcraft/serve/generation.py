"""Generation behind the server: OpenAI-style completions (any model with a language-model head) and chat
completions (a model fine-tuned with ``--task chat``), streamed piece by piece.

Requests with the same decoding settings that arrive together are decoded as one batch (one prefill over
all prompts, then every decoding step for all rows at once, each with its own KV cache row): the
``DynamicBatcher`` gathers them, and each row's text goes back to its own request as it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from lmcraft.model.generate import GenerationConfig, generate_from_ids
from lmcraft.model.heads import Model
from lmcraft.tokenizer import TextTokenizer


@dataclass
class GenerationRequest:
    """One prompt to continue; ``on_piece`` receives its text as it is written (from the worker thread)."""

    ids: list[int]
    cfg: GenerationConfig
    eos_id: int | None
    on_piece: Callable[[str], None] | None = None


def decoding_key(request: GenerationRequest) -> tuple:
    """What requests must share to be decoded in one batch."""
    cfg = request.cfg
    return (cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, tuple(cfg.stop),
            cfg.seed, request.eos_id)


def run_generation(model: Model, tokenizer: TextTokenizer, requests: list[GenerationRequest]) -> list[str]:
    """Decode a batch of requests with one decoding setting (the batcher only groups equal ones)."""
    first = requests[0]

    def on_text(row: int, piece: str) -> None:
        callback = requests[row].on_piece
        if callback is not None:
            callback(piece)

    return generate_from_ids(model, tokenizer, [r.ids for r in requests], first.cfg, on_text=on_text,
                             eos_id=first.eos_id)


def thread_safe_queue(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Queue, Callable[[str], None]]:
    """A queue of text pieces and the callback that fills it from another thread."""
    queue: asyncio.Queue = asyncio.Queue()
    return queue, lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece)

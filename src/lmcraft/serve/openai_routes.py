"""OpenAI-compatible ``POST /v1/completions`` and ``POST /v1/chat/completions``: the shapes the ``openai``
client reads, streamed as server-sent events (``data: {...}`` chunks, then ``data: [DONE]``) when
``stream`` is true. Greedy by default (``temperature`` 0), as ``lmcraft generate`` is; ``n`` is 1."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from lmcraft.model.generate import GenerationConfig
from lmcraft.serve.generation import GenerationRequest, thread_safe_queue
from lmcraft.serve.models import ServedModel
from lmcraft.serve.schemas import ApiError, ChatRequest, CompletionRequest, Sampling

if TYPE_CHECKING:
    from lmcraft.serve.app import ServerState

DONE = object()  # the end of a stream


def _config(body: Sampling, default_tokens: int, cap: int) -> GenerationConfig:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return GenerationConfig(max_new_tokens=min(body.max_tokens or default_tokens, cap), temperature=body.temperature,
                            top_p=body.top_p, stop=stop, seed=body.seed or 0)


def _chat_prompt(served: ServedModel, body: ChatRequest, cfg: GenerationConfig) -> tuple[list[int], int]:
    """(prompt ids, end-of-answer id) of a conversation, written with the model's chat template."""
    from lmcraft.data.chat import conversation_from_record

    task = served.predictor.task
    record = {"messages": [m.model_dump() for m in body.messages]}
    try:
        turns = conversation_from_record(Path("<request>"), 0, record, prompt=True).turns
    except ValueError as error:
        raise ApiError(422, f"messages: {error}", "invalid_request_error", "invalid_messages") from None
    model = served.predictor.model
    # prompt_ids leaves room for the task's max_target_tokens; leave room for this request's instead
    limit = model.backbone.cfg.max_tokens - cfg.max_new_tokens + task.max_target_tokens  # type: ignore[union-attr]
    return task.prompt_ids(served.predictor.tokenizer, [list(turns)], limit)[0], task.eos_id  # type: ignore[union-attr]


def _completion_prompt(served: ServedModel, body: CompletionRequest) -> list[int]:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ApiError(422, "prompt: one prompt per request (n = 1)", "invalid_request_error", "invalid_field")
    return served.predictor.tokenizer.encode(prompts, max_len=None)[0]  # as `lmcraft generate` encodes it


def _usage(served: ServedModel, prompt: list[int], text: str) -> dict[str, int]:
    completion = len(served.predictor.tokenizer.encode([text], max_len=None, special_tokens=False)[0]) if text else 0
    return {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion}


def _finish(usage: dict[str, int], cfg: GenerationConfig) -> str:
    return "length" if usage["completion_tokens"] >= cfg.max_new_tokens else "stop"


def add_openai_routes(app: FastAPI, state: ServerState) -> None:
    async def generate(served: ServedModel, prompt: list[int], eos_id: int | None, cfg: GenerationConfig,
                       stream: bool) -> tuple[asyncio.Queue | None, asyncio.Future]:
        """Queue the request; (the queue its pieces arrive on when streaming, the future of its whole text)."""
        if state.cfg.max_input_tokens > 0 and len(prompt) > state.cfg.max_input_tokens:
            if not state.cfg.truncate:
                raise ApiError(422, f"the prompt has {len(prompt)} tokens; the limit is {state.cfg.max_input_tokens} "
                                    "(--max-input-tokens)", "invalid_request_error", "input_too_long")
            prompt = prompt[-state.cfg.max_input_tokens :]
        room = served.predictor.model.backbone.cfg.max_tokens - len(prompt)
        if room < 1:
            raise ApiError(422, f"the prompt has {len(prompt)} tokens, which fill the model's "
                                f"{served.predictor.model.backbone.cfg.max_tokens} positions", "invalid_request_error",
                           "input_too_long")
        cfg.max_new_tokens = min(cfg.max_new_tokens, room)
        loop = asyncio.get_running_loop()
        queue, on_piece = thread_safe_queue(loop) if stream else (None, None)
        request = GenerationRequest(prompt, cfg, eos_id, on_piece)
        assert served.generator is not None
        if served.generator.waiting + 1 > served.generator.max_queue:
            raise ApiError(429, "the server is busy; retry shortly", "overloaded", "queue_full",
                           headers={"Retry-After": "1"})
        key = served.generation_key(request)
        future = asyncio.ensure_future(served.generator.submit([request], [len(prompt)], key))
        return queue, future

    async def pieces(queue: asyncio.Queue, future: asyncio.Future) -> AsyncIterator[str]:
        """The text pieces of a streamed request until its generation ends."""
        future.add_done_callback(lambda _: queue.put_nowait(DONE))
        deadline = time.monotonic() + state.cfg.timeout
        while True:
            piece = await asyncio.wait_for(queue.get(), max(deadline - time.monotonic(), 0.001))
            if piece is DONE:
                break
            yield piece
        future.result()  # raises what the generation raised

    def account(served: ServedModel, prompt: list[int], text: str) -> dict[str, int]:
        """The usage of a finished generation, counted in the metrics too."""
        usage = _usage(served, prompt, text)
        state.metrics.generated.labels(served.name).inc(usage["completion_tokens"])
        return usage

    def sse(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        served = state.model(body.model, "completions")
        cfg = _config(body, 16, state.cfg.max_new_tokens)  # OpenAI's default max_tokens for completions is 16
        prompt = _completion_prompt(served, body)
        ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        queue, future = await generate(served, prompt, None, cfg, body.stream)
        if queue is None:
            text = (await state.within_time(future))[0]
            usage = account(served, prompt, text)
            return {"id": ident, "object": "text_completion", "created": created, "model": served.name,
                    "choices": [{"index": 0, "text": text, "finish_reason": _finish(usage, cfg), "logprobs": None}],
                    "usage": usage}

        async def events() -> AsyncIterator[str]:
            text = ""
            async for piece in pieces(queue, future):
                text += piece
                yield sse({"id": ident, "object": "text_completion", "created": created, "model": served.name,
                           "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]})
            usage = account(served, prompt, text)
            yield sse({"id": ident, "object": "text_completion", "created": created, "model": served.name,
                       "choices": [{"index": 0, "text": "", "finish_reason": _finish(usage, cfg), "logprobs": None}],
                       "usage": usage})
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        served = state.model(body.model, "chat")
        task = served.predictor.task
        cfg = _config(body, task.max_target_tokens + 1, state.cfg.max_new_tokens)  # type: ignore[union-attr]
        prompt, eos_id = _chat_prompt(served, body, cfg)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        queue, future = await generate(served, prompt, eos_id, cfg, body.stream)
        if queue is None:
            text = (await state.within_time(future))[0]
            usage = account(served, prompt, text)
            return {"id": ident, "object": "chat.completion", "created": created, "model": served.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": _finish(usage, cfg), "logprobs": None}],
                    "usage": usage}

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, str], finish: str | None, **extra: Any) -> str:
                return sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": served.name,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                            **extra})
            yield chunk({"role": "assistant", "content": ""}, None)
            text = ""
            async for piece in pieces(queue, future):
                text += piece
                yield chunk({"content": piece}, None)
            usage = account(served, prompt, text)
            yield chunk({}, _finish(usage, cfg), usage=usage)
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

"""Dynamic batching: requests that arrive within a few milliseconds of each other run as one batch.

Each request brings one or more inputs. The first request waits at most ``max_wait_ms`` for others; the
batch closes earlier when it holds ``max_batch_size`` inputs or ``max_batch_tokens`` tokens (inputs × the
longest), or when the next request cannot share it (another ``key``: generation requests batch only with
others of the same decoding settings). One worker thread runs the batches, so the model is never used by
two threads at once and the event loop stays free to accept requests; each request gets its own share of
the answers back, in order. A queue holding more than ``max_queue`` inputs refuses new ones
(``Overloaded``: the server answers 429).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

QUIET_ROUNDS = 3  # yields to the event loop that bring no request before a batch closes


class Overloaded(Exception):
    """The queue is full; try again later."""


@dataclass
class Pending:
    inputs: list[Any]
    tokens: list[int]  # length of each input in tokens
    future: asyncio.Future
    key: Hashable = None  # requests share a batch only with requests of the same key
    queued_at: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Runs ``run(inputs) -> answers`` on batches gathered from concurrent ``submit`` calls."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], executor: ThreadPoolExecutor, *, max_batch_size: int,
                 max_batch_tokens: int, max_wait_ms: float, max_queue: int,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.run, self.executor = run, executor
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch  # (inputs, tokens) of every batch run, for the metrics
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.waiting = 0  # inputs queued and not yet taken into a batch
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def submit(self, inputs: Sequence[Any], tokens: Sequence[int], key: Hashable = None) -> list[Any]:
        """The answers to ``inputs``, in order, once a batch has run them."""
        if self.waiting + len(inputs) > self.max_queue:
            raise Overloaded(f"{self.waiting} inputs are waiting (at most {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self.waiting += len(inputs)
        await self.queue.put(Pending(list(inputs), list(tokens), future, key))
        return await future

    def _fits(self, batch: list[Pending], pending: Pending) -> bool:
        if pending.key != batch[0].key:
            return False
        n = sum(len(p.inputs) for p in batch) + len(pending.inputs)
        longest = max([t for p in batch for t in p.tokens] + pending.tokens + [1])
        return n <= self.max_batch_size and n * longest <= self.max_batch_tokens

    async def _gather(self, batch: list[Pending]) -> Pending | None:
        """Add the requests that are waiting, or about to be, to ``batch``; return one that cannot join it.

        Requests the event loop is still reading are about to arrive: yielding to the loop a few times lets
        them reach the queue, and gathering stops once ``QUIET_ROUNDS`` yields in a row bring nothing (a lone
        request then waits a few microseconds, not ``max_wait_ms``). With ``max_wait_ms`` the first request
        also waits that long for others."""
        deadline = batch[0].queued_at + self.max_wait
        quiet = 0
        while True:
            try:
                nxt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if quiet >= QUIET_ROUNDS and remaining <= 0:
                    return None
                if quiet < QUIET_ROUNDS:
                    quiet += 1
                    await asyncio.sleep(0)
                    continue
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    return None
            quiet = 0
            if not self._fits(batch, nxt):
                return nxt  # it starts the next batch
            batch.append(nxt)
            if sum(len(p.inputs) for p in batch) >= self.max_batch_size:
                return None

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        carry: Pending | None = None
        while True:
            first = carry or await self.queue.get()
            batch = [first]
            carry = await self._gather(batch)
            live = [p for p in batch if not p.future.done()]  # a request that timed out is not run
            self.waiting -= sum(len(p.inputs) for p in batch)
            if not live:
                continue
            inputs = [x for p in live for x in p.inputs]
            if self.on_batch is not None:
                self.on_batch(len(inputs), len(inputs) * max(t for p in live for t in p.tokens))
            try:
                answers = await loop.run_in_executor(self.executor, self.run, inputs)
            except Exception as error:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            start = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(answers[start : start + len(p.inputs)])
                start += len(p.inputs)

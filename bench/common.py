"""Shared pieces of the side-by-side benchmarks: the machine's matmul peak, isolated measurements (each in
its own process, so that peak memory is its own), alternation and medians.

These machines are noisy, so every benchmark runs the two sides alternately, several times, and reports
the median of each and their ratio.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch


def matmul_peak(dtype: torch.dtype, *, threads: int, size: int = 1024, seconds: float = 1.5) -> float:
    """GFLOP/s of a square matmul in ``dtype`` on this machine (the best of a few timed bursts)."""
    torch.set_num_threads(threads)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(3):
        a @ b  # warm-up
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * size**3 / elapsed / 1e9)
    return best


def _child(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any], queue: Any) -> None:
    try:
        result = fn(**kwargs)
    except BaseException:  # the parent re-raises it with the child's traceback
        queue.put({"error": traceback.format_exc()})
        return
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def isolated(fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(**kwargs)`` in a fresh process; its result gains ``peak_rss_mb`` (that process's peak)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(fn, kwargs, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}{kwargs} failed in its process:\n{result['error']}")
    return result


def alternate(sides: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Every side once per round, ``repeats`` rounds: drift of the machine hits all sides alike."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            results[name].append(run())
    return results


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)

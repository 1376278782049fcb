"""A lean load generator for bench/serve_load.py: ``concurrency`` keep-alive HTTP/1.1 connections on one
asyncio loop (uvloop when installed), raw requests and responses, no client library.

The client shares the machine with the servers it measures, so it must cost as little CPU per request as it
can: a thread-per-client load with a full HTTP library spends more time in the client than a small model
spends answering, and then both servers measure the client. This one parses only the status line and
``content-length`` of each answer. Runs in its own process (``python bench/http_load.py URL ...`` prints one
JSON line), so its interpreter lock is not the servers' either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from urllib.parse import urlsplit


async def one_connection(host: str, port: int, path: str, bodies: list[bytes], next_index: Iterator[int],
                         deadline: float, latencies: list[float], statuses: dict[int, int]) -> None:
    """Send requests one after another on one connection; a dropped connection is counted as status 0 (a
    lost request) and opened again."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in next_index:
            if time.perf_counter() > deadline:
                return
            body = bodies[i % len(bodies)]
            head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n").encode()
            start = time.perf_counter()
            try:
                writer.write(head + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                statuses[0] = statuses.get(0, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def load(url: str, bodies: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    parts = urlsplit(url)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = iter(range(requests))  # shared: the connections take the requests in turn
    began = time.perf_counter()
    await asyncio.gather(*(one_connection(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/",
                                          bodies, next_index, began + seconds, latencies, statuses)
                           for _ in range(concurrency)))
    wall = time.perf_counter() - began
    latencies.sort()
    return {"requests_per_s": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "answered": sum(statuses.values()), "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/v1/predict")
    parser.add_argument("texts", help="a file of one-text request inputs, one per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    bodies = [json.dumps({"inputs": [line]}, ensure_ascii=False).encode() for line in lines]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(load(args.url, bodies, args.concurrency, args.requests, args.seconds))))


if __name__ == "__main__":
    main()

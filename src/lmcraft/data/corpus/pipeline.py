"""The streaming corpus pipeline: raw text files in, sharded token files and a manifest out.

    main process: read lines ──(at most 2 × workers batches in flight)──▶ worker processes:
                                                                          decode, normalise, split sentences,
                                                                          filter, digest, MinHash, tokenize
    main process: ◀── results, in input order ── exact dedup, near dedup, shard writer, checkpoints

Everything per document that needs no state runs in the workers; what must see the documents in order (the
two duplicate indexes and the shard being written) runs in the main process, which takes the workers'
results back in input order. So the output does not depend on the number of workers, and the memory of the
whole process tree is bounded: a few batches in flight, the shard's offsets, the exact-duplicate table (16
bytes a kept document) and the near-duplicate window (see ``dedup``). The corpus itself is never held.

Workers tokenize every document that passes the filters, duplicates included (~10% wasted work on a
typical crawl): deciding duplicates first would need the main process to hand documents back and forth.

Resume: when a shard is complete, the main process writes a checkpoint: the duplicate indexes
(``state-NNNNN/exact.npy``, ``near.npy``), then ``progress.json`` (atomically: temp file and rename) with the
shards done, the counts so far and the input position just after the last line in them (file index, byte
offset, line number). A resumed run seeks there, reloads the indexes and goes on; every step is
deterministic, so it writes the same bytes as an uninterrupted run. Shards are only closed between input
lines, so a line's sentences (``--unit sentence``) never straddle a checkpoint. A kill at any moment leaves
``progress.json`` pointing at a complete state directory and complete shards; files of a shard that had not
been checkpointed are removed on resume. For a ``.gz`` input the offset is into the decompressed stream, and
resuming decompresses up to it again.

Undecodable bytes are replaced (U+FFFD) and the lines counted (``bad_utf8_lines``) rather than stopping a
long run at the first stray byte; a JSONL line that is not a JSON object with a string ``text`` field is a
``DataError`` naming the file and the line (everything before it is processed first).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lmcraft.data.corpus.config import FORMAT, REMOVED, CorpusConfig, OutDirError
from lmcraft.data.corpus.dedup import ExactSet, MinHasher, NearDupIndex
from lmcraft.data.corpus.inputs import Position, ReadBatch, read_batches
from lmcraft.data.corpus.shards import ShardInfo, ShardWriter, token_dtype
from lmcraft.data.corpus.worker import BatchResult, DocProcessor, init_worker, work
from lmcraft.data.errors import DataError
from lmcraft.fsutil import sha256_of, staged_dir, write_json
from lmcraft.tokenizer import ROLES_FILE, TextTokenizer

# ---- the run: its identity, the output directory, checkpoints ---------------------------------------


def run_identity(config: CorpusConfig, tokenizer: TextTokenizer) -> dict[str, Any]:
    """Everything that decides the output: two runs with equal identities write the same bytes."""
    tokenizer_file = config.tokenizer / "tokenizer.json" if config.tokenizer.is_dir() else config.tokenizer
    roles = tokenizer_file.parent / ROLES_FILE
    inputs = []
    for path in config.inputs:
        if not path.is_file():
            raise DataError(path, "no such file")
        stat = path.stat()
        inputs.append({"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {
        "format": FORMAT,
        "inputs": inputs,
        "tokenizer": {"sha256": sha256_of(tokenizer_file), "roles_sha256": sha256_of(roles) if roles.exists() else None,
                      "vocab_size": tokenizer.vocab_size},
        "dtype": token_dtype(tokenizer.vocab_size),
        "unit": config.unit,
        "text_field": config.text_field,
        "shard_tokens": config.shard_tokens,
        "filters": asdict(config.filters),
        "dedup": asdict(config.dedup),
    }


def _ours(path: Path) -> bool:
    """A file or directory this pipeline writes in its output directory."""
    name = path.name
    return name.startswith(("shard-", "state-", ".state-")) or name in ("manifest.json", "progress.json") \
        or name.endswith(".tmp")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _previous_run(config: CorpusConfig, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start afresh), after checking what the output directory holds;
    a finished identical run under --resume comes back as its manifest with ``"finished": True``."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    manifest, progress = out / "manifest.json", out / "progress.json"
    if config.overwrite:
        for path in out.iterdir():
            if _ours(path):
                _remove(path)
        return None
    if progress.exists():
        saved = json.loads(progress.read_text(encoding="utf-8"))
        if not config.resume:
            raise OutDirError(f"{out} holds an unfinished corpus run ({len(saved['shards'])} shards done): pass "
                              "--resume to continue it, or --overwrite to start again")
        changed = sorted(k for k in identity.keys() | saved["run"].keys() if identity.get(k) != saved["run"].get(k))
        if changed:
            raise OutDirError(f"{out} holds an unfinished run with other settings ({', '.join(changed)} differ), "
                              "which --resume cannot continue; pass --overwrite to start again")
        return saved
    if manifest.exists():
        try:
            finished = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            finished = {}
        if config.resume and finished.get("run") == identity:
            return {**finished, "finished": True}
        what = "this run, already finished" if finished.get("run") == identity else "a different run"
        raise OutDirError(f"{out} already holds a manifest.json ({what}); pass --overwrite to replace it")
    return None


def _checkpoint(out: Path, progress: dict[str, Any], exact: ExactSet, near: NearDupIndex | None) -> None:
    """State directory first, then progress.json pointing at it, then older state directories go."""
    state = f"state-{len(progress['shards']):05d}"
    with staged_dir(out / state, durable=True) as staging:
        np.save(staging / "exact.npy", exact.table)
        np.save(staging / "near.npy", near.state() if near is not None else np.zeros((0, 0), np.uint32))
    write_json(out / "progress.json", {**progress, "state": state})
    for old in out.glob("state-*"):
        if old.name != state:
            shutil.rmtree(old, ignore_errors=True)


# ---- the main loop ------------------------------------------------------------------------------------


class _Assembler:
    """The ordered part of the run, in the main process: duplicate indexes, the shard being written, the
    counts, and a checkpoint whenever a shard is complete."""

    def __init__(self, config: CorpusConfig, identity: dict[str, Any], saved: dict[str, Any] | None,
                 on_shard: Callable[[ShardInfo], None] | None) -> None:
        self.config, self.identity, self.on_shard = config, identity, on_shard
        self.counts: Counter[str] = Counter()
        self.shards: list[dict[str, Any]] = []
        self.exact = ExactSet()
        dedup = config.dedup
        self.near = NearDupIndex(dedup.threshold, dedup.num_perm, dedup.window) if dedup.near_dup else None
        self.seconds = self.cpu_seconds = 0.0  # spent by earlier, interrupted runs
        self.start = Position()
        if saved is not None:
            self.counts.update(saved["counts"])
            self.shards = saved["shards"]
            self.start = Position(**saved["position"])
            self.seconds, self.cpu_seconds = saved["seconds"], saved["cpu_seconds"]
            state = config.out / saved["state"]
            self.exact = ExactSet(np.load(state / "exact.npy"))
            if self.near is not None:
                self.near.restore(np.load(state / "near.npy"), saved["near_added"])
        self.writer: ShardWriter | None = None
        self.clock, self.cpu_clock = time.perf_counter(), time.process_time()
        self.worker_cpu = 0.0  # CPU seconds the worker processes spent on this run's batches

    def elapsed(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process and the workers) over all runs so far. The workers
        report their CPU time with each batch (their start-up is not counted)."""
        cpu = self.cpu_seconds + time.process_time() - self.cpu_clock + self.worker_cpu
        return self.seconds + time.perf_counter() - self.clock, cpu

    def _keep(self, result: BatchResult, d: int, k: int, starts: np.ndarray) -> str | None:
        """Document d (passing document k) of the batch: the duplicate check that removes it, or None after
        writing it to the shard."""
        if not self.exact.add(result.digests[k]):
            return "exact_dup"
        if self.near is not None and not self.near.add(result.signatures[k]):
            return "near_dup"
        if self.writer is None:
            self.writer = ShardWriter(self.config.out, len(self.shards), self.identity["dtype"])
        self.writer.add(result.tokens[starts[k] : starts[k + 1]])
        self.counts["kept_documents"] += 1
        self.counts["kept_sentences"] += result.n_sentences[d]
        self.counts["kept_characters"] += result.n_chars[k]
        return None

    def take(self, result: BatchResult, read: ReadBatch) -> None:
        """Take a batch's results, in input order."""
        counts = self.counts
        starts = np.concatenate([[0], np.cumsum(result.lengths)])  # (n_passing + 1,)
        d = k = 0  # the next document, the next passing document
        for line_i, n_docs in enumerate(result.docs_per_line):
            counts["lines"] += 1
            counts["empty_lines"] += n_docs == 0
            for _ in range(n_docs):
                reason = result.reasons[d]
                counts["documents"] += 1
                counts["sentences"] += result.n_sentences[d]
                if reason is None:
                    reason = self._keep(result, d, k, starts)
                    k += 1
                if reason is not None:
                    counts[f"removed_{reason}"] += 1
                d += 1
            if self.writer is not None and self.writer.n_tokens >= self.config.shard_tokens:
                self._close_shard(read.after(line_i))
        counts["bad_utf8_lines"] += result.bad_utf8
        if self.config.workers > 0:  # with none, the batch's time is this process's own
            self.worker_cpu += result.cpu_seconds
        if result.error is not None:
            line, message, field_name = result.error
            raise DataError(read.batch.path, message, line=line, field=field_name)

    def _close_shard(self, after: Position) -> None:
        assert self.writer is not None
        info = self.writer.close()
        self.writer = None
        self.shards.append(asdict(info))
        seconds, cpu_seconds = self.elapsed()
        _checkpoint(self.config.out, {
            "run": self.identity, "shards": self.shards, "position": asdict(after), "counts": dict(self.counts),
            "near_added": self.near.n_added if self.near is not None else 0,
            "seconds": seconds, "cpu_seconds": cpu_seconds,
        }, self.exact, self.near)
        if self.on_shard is not None:
            self.on_shard(info)

    def finish(self) -> None:
        if self.writer is not None:
            self.shards.append(asdict(self.writer.close()))
            self.writer = None

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()


class _Inline:
    """The result of a batch done in this process (workers=0), shaped like an AsyncResult."""

    def __init__(self, value: BatchResult) -> None:
        self.value = value

    def get(self) -> BatchResult:
        return self.value


def run_corpus(config: CorpusConfig, *, on_shard: Callable[[ShardInfo], None] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the manifest (also written to ``config.out / "manifest.json"``).

    ``on_shard`` is called after each shard is complete and checkpointed; an exception raised there stops
    the run as a kill would (the tests interrupt a run so and resume it)."""
    tokenizer = TextTokenizer.load(config.tokenizer)
    identity = run_identity(config, tokenizer)
    saved = _previous_run(config, identity)
    if saved is not None and saved.get("finished"):
        return {k: v for k, v in saved.items() if k != "finished"}
    assembler = _Assembler(config, identity, saved, on_shard)
    done_shards = {s["name"] for s in assembler.shards}
    for path in config.out.iterdir():  # the files of a shard begun after the last checkpoint, a staging dir
        name = path.name
        if name.endswith(".tmp") or name.startswith(".state-") or (name.startswith("shard-") and
                                                                   path.stem not in done_shards):
            _remove(path)

    minhasher = MinHasher(config.dedup.num_perm) if config.dedup.near_dup else None
    pool = None
    if config.workers > 0:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked tokenizer threads or locks
        pool = ctx.Pool(config.workers, initializer=init_worker, initargs=(config, minhasher))
    else:
        processor = DocProcessor(config, minhasher)
    max_in_flight = 2 * max(config.workers, 1)  # bounds the memory between the reader and the workers

    from tqdm import tqdm

    total_bytes = sum(p.stat().st_size for p in config.inputs)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="corpus",
               disable=None if config.progress else True)
    try:
        in_flight: deque[tuple[Any, ReadBatch]] = deque()
        reads: Iterator[ReadBatch] | None = read_batches(config, assembler.start)
        while True:
            while reads is not None and len(in_flight) < max_in_flight:
                read = next(reads, None)
                if read is None:
                    reads = None
                elif pool is not None:
                    in_flight.append((pool.apply_async(work, (read.batch,)), read))
                else:
                    in_flight.append((_Inline(processor(read.batch)), read))
            if not in_flight:
                break
            pending, read = in_flight.popleft()
            assembler.take(pending.get(), read)
            bar.update(read.done_bytes - bar.n)
        assembler.finish()
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        bar.close()
        assembler.abandon()
        if pool is not None:
            pool.terminate()
    seconds, cpu_seconds = assembler.elapsed()
    manifest = _manifest(config, identity, assembler.shards, assembler.counts, seconds, cpu_seconds, total_bytes)
    write_json(config.out / "manifest.json", manifest)
    (config.out / "progress.json").unlink(missing_ok=True)
    for state in config.out.glob("state-*"):
        shutil.rmtree(state, ignore_errors=True)
    return manifest


def _manifest(config: CorpusConfig, identity: dict[str, Any], shards: list[dict[str, Any]], counts: Counter[str],
              seconds: float, cpu_seconds: float, input_bytes: int) -> dict[str, Any]:
    n_tokens = sum(s["n_tokens"] for s in shards)
    mb = input_bytes / 1e6
    return {
        "format": FORMAT,
        "dtype": identity["dtype"],
        "tokenizer": {"path": str(config.tokenizer), **identity["tokenizer"]},
        "n_docs": sum(s["n_docs"] for s in shards),
        "n_tokens": n_tokens,
        "shards": shards,
        "inputs": [{"path": i["path"], "bytes": i["bytes"]} for i in identity["inputs"]],
        "counts": {
            "lines": counts["lines"], "empty_lines": counts["empty_lines"], "bad_utf8_lines": counts["bad_utf8_lines"],
            "documents": counts["documents"], "sentences": counts["sentences"],
            "removed": {reason: counts[f"removed_{reason}"] for reason in REMOVED},
            "kept": {"documents": counts["kept_documents"], "sentences": counts["kept_sentences"],
                     "characters": counts["kept_characters"], "tokens": n_tokens},
        },
        "throughput": {
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3), "workers": config.workers,
            "input_mb": round(mb, 3), "mb_per_s": round(mb / seconds, 3) if seconds else None,
            "mb_per_cpu_second": round(mb / cpu_seconds, 3) if cpu_seconds else None,
            "tokens_per_s": round(n_tokens / seconds, 1) if seconds else None,
        },
        "run": identity,
    }

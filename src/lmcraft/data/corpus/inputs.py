"""Reading the inputs: text or JSONL files, gzipped or not, line by line as bytes, with the position (file,
byte offset, line) after each batch, so that a resumed run can seek back to it."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmcraft.data.corpus.config import CorpusConfig
from lmcraft.data.corpus.worker import Batch

# ---- reading the inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    file: int = 0  # index into the inputs
    offset: int = 0  # bytes of that file (decompressed, for .gz) already consumed
    line: int = 0  # lines of that file already consumed


def is_jsonl(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".jsonl", ".json"))


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the stream of lines, the file on disk): the same file, unless it is gzipped."""
    raw = path.open("rb")
    return (gzip.GzipFile(fileobj=raw, mode="rb") if path.name.lower().endswith(".gz") else raw), raw  # type: ignore[return-value]


@dataclass(frozen=True)
class ReadBatch:
    batch: Batch
    file: int  # the index of the batch's file among the inputs
    ends: list[int]  # the offset in that file after each line of the batch
    done_bytes: int  # input bytes on disk read so far, over all files (for the progress bar)

    def after(self, i: int) -> Position:
        """The position after line i of the batch."""
        return Position(self.file, self.ends[i], self.batch.first_line + i)


def read_batches(config: CorpusConfig, start: Position) -> Iterator[ReadBatch]:
    """Batches of raw lines from ``start`` on, in order."""
    sizes = [p.stat().st_size for p in config.inputs]
    for index in range(start.file, len(config.inputs)):
        path = config.inputs[index]
        offset, line = (start.offset, start.line) if index == start.file else (0, 0)
        stream, raw = _open(path)
        with raw, stream:
            if offset:
                stream.seek(offset)
            lines: list[bytes] = []
            ends: list[int] = []
            size = 0
            for text in stream:
                offset += len(text)
                line += 1
                lines.append(text)
                ends.append(offset)
                size += len(text)
                if len(lines) >= config.batch_lines or size >= config.batch_bytes:
                    yield ReadBatch(Batch(str(path), is_jsonl(path), line - len(lines) + 1, lines), index, ends,
                                sum(sizes[:index]) + raw.tell())
                    lines, ends, size = [], [], 0
            if lines:
                yield ReadBatch(Batch(str(path), is_jsonl(path), line - len(lines) + 1, lines), index, ends,
                            sum(sizes[:index]) + raw.tell())

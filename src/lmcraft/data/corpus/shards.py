"""Sharded binary token files: the writer the pipeline fills, and ``TokenShards``, the reader.

A shard is two files:

- ``shard-00000.bin``: the token ids of its documents, one after another, little-endian ``uint16`` when
  the vocabulary has fewer than 65,536 entries, else ``uint32`` (the manifest's ``dtype``);
- ``shard-00000.idx``: little-endian ``int64`` offsets into the ``.bin`` in tokens, one more than there are
  documents: document i is ``tokens[offsets[i]:offsets[i + 1]]``, ``offsets[0] == 0``.

Documents are stored without special tokens ([CLS], [SEP], EOS): whoever packs them into training
sequences adds the separators it needs. A shard holds whole documents; it is closed once it holds
``shard_tokens`` tokens or more. Both files are written under ``.tmp`` names and renamed when the shard is
complete, so a file with a final name is always whole. ``manifest.json`` lists the shards in order with
their counts and SHA-256 digests.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
OFFSET_DTYPE = np.dtype("<i8")


def token_dtype(vocab_size: int) -> str:
    """'uint16' if every id fits in 16 bits (vocab_size < 65,536), else 'uint32'."""
    return "uint16" if vocab_size < 1 << 16 else "uint32"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard, as the manifest lists it."""

    name: str  # "shard-00000": the files are name.bin and name.idx
    n_tokens: int  # tokens in name.bin
    n_docs: int  # documents: name.idx holds n_docs + 1 offsets
    sha256_bin: str  # of name.bin
    sha256_idx: str  # of name.idx


class ShardWriter:
    """Appends documents to one shard; ``close`` makes it final and returns its ``ShardInfo``."""

    def __init__(self, directory: Path, index: int, dtype: str) -> None:
        self.name = shard_name(index)
        self.dtype = DTYPES[dtype]
        self.bin_path, self.idx_path = directory / f"{self.name}.bin", directory / f"{self.name}.idx"
        self._tmp = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._file = self._tmp.open("wb")
        self._sha = hashlib.sha256()
        self.offsets = [0]  # in tokens; len = n_docs + 1

    @property
    def n_tokens(self) -> int:
        return self.offsets[-1]

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def add(self, ids: np.ndarray) -> None:
        """Append one document's token ids, (n,) of any integer dtype."""
        data = ids.astype(self.dtype, copy=False).tobytes()
        self._file.write(data)
        self._sha.update(data)
        self.offsets.append(self.offsets[-1] + len(ids))

    def close(self) -> ShardInfo:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        index = np.asarray(self.offsets, dtype=OFFSET_DTYPE).tobytes()
        idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        with idx_tmp.open("wb") as f:
            f.write(index)
            f.flush()
            os.fsync(f.fileno())
        self._tmp.replace(self.bin_path)
        idx_tmp.replace(self.idx_path)
        return ShardInfo(self.name, self.n_tokens, self.n_docs, self._sha.hexdigest(),
                         hashlib.sha256(index).hexdigest())

    def abandon(self) -> None:
        """Close and delete the unfinished files (an interrupted run starts this shard again on resume)."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class TokenShards:
    """The documents of a corpus directory, memory-mapped: nothing is read until a document is asked for.

        shards = TokenShards("corpus/")
        len(shards), shards.n_tokens       # documents, tokens
        shards.doc(0)                      # np.ndarray (n,) of uint16 or uint32 token ids
        for ids in shards: ...             # every document in order
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path}: no manifest here (write one with `lmcraft data corpus`)")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.dtype = DTYPES[self.manifest["dtype"]]
        self._tokens: list[np.ndarray] = []  # per shard: (n_tokens,) memmap
        self._offsets: list[np.ndarray] = []  # per shard: (n_docs + 1,) memmap
        self._first_doc = [0]  # global index of each shard's first document; last entry = len(self)
        for shard in self.manifest["shards"]:
            bin_path = self.directory / f"{shard['name']}.bin"
            idx_path = self.directory / f"{shard['name']}.idx"
            offsets = np.memmap(idx_path, dtype=OFFSET_DTYPE, mode="r")
            if len(offsets) != shard["n_docs"] + 1 or offsets[-1] != shard["n_tokens"]:
                raise ValueError(f"{idx_path}: holds {len(offsets) - 1} documents and {offsets[-1]} tokens, the "
                                 f"manifest says {shard['n_docs']} and {shard['n_tokens']}")
            # (numpy cannot map an empty file; a shard of documents without tokens is one)
            tokens = np.memmap(bin_path, dtype=self.dtype, mode="r") if shard["n_tokens"] else np.zeros(0, self.dtype)
            if len(tokens) != shard["n_tokens"]:
                raise ValueError(f"{bin_path}: holds {len(tokens)} tokens, the manifest says {shard['n_tokens']}")
            self._tokens.append(tokens)
            self._offsets.append(offsets)
            self._first_doc.append(self._first_doc[-1] + shard["n_docs"])

    def __len__(self) -> int:
        return self._first_doc[-1]

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self._tokens)

    def doc(self, i: int) -> np.ndarray:
        """The token ids of document ``i`` (negative counts from the end): a read-only (n,) view."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} out of range: the corpus holds {len(self)}")
        shard = bisect.bisect_right(self._first_doc, i) - 1
        j = i - self._first_doc[shard]
        offsets = self._offsets[shard]
        return self._tokens[shard][offsets[j] : offsets[j + 1]]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.doc(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for tokens, offsets in zip(self._tokens, self._offsets, strict=True):
            for start, end in pairwise(np.asarray(offsets).tolist()):
                yield tokens[start:end]


class TokenStream:
    """The documents of one or more corpora as one stream of tokens, every document followed by ``sep_id``,
    read from the memory-mapped shards only where asked:

        stream = TokenStream([TokenShards("corpus/")], sep_id=3)
        len(stream)                        # tokens + one separator per document
        ids, docs = stream.chunk(0, 126)   # (126,) token ids, and the document index of each

    It holds a few numbers per shard and nothing per document or token, so its memory does not grow with
    the corpus: a document is found by binary search over the shard's ``.idx`` map. Document indices run
    over all the corpora in order; a separator belongs to the document it ends.
    """

    def __init__(self, corpora: list[TokenShards], sep_id: int) -> None:
        self.sep_id = sep_id
        self._parts: list[tuple[np.ndarray, np.ndarray, int]] = []  # per shard: tokens, offsets, first document
        self._starts = [0]  # stream position of each shard's first token; last entry = len(self)
        first_doc = 0
        for shards in corpora:
            for tokens, offsets in zip(shards._tokens, shards._offsets, strict=True):
                n_docs = len(offsets) - 1
                self._parts.append((tokens, offsets, first_doc))
                self._starts.append(self._starts[-1] + len(tokens) + n_docs)
                first_doc += n_docs
        self.n_docs = first_doc

    def __len__(self) -> int:
        return self._starts[-1]

    def chunk(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The stream's tokens [start, start + n) as int64 ids (n,) and their documents' indices (n,)."""
        if start < 0 or start + n > len(self):
            raise IndexError(f"tokens [{start}, {start + n}) lie outside the stream's {len(self)}")
        ids = np.empty(n, dtype=np.int64)
        docs = np.empty(n, dtype=np.int64)
        filled = 0
        part = bisect.bisect_right(self._starts, start) - 1
        pos = start - self._starts[part]  # position within this shard's stream
        while filled < n:
            tokens, offsets, first = self._parts[part]
            n_docs = len(offsets) - 1
            # document j spans the shard stream's [offsets[j] + j, offsets[j + 1] + j + 1): tokens, then separator
            j = max(bisect.bisect_right(range(n_docs), pos, key=lambda d: int(offsets[d]) + d) - 1, 0)
            while filled < n and j < n_docs:
                body = tokens[pos - j : int(offsets[j + 1])]  # the rest of document j
                take = min(len(body), n - filled)
                ids[filled : filled + take] = body[:take]
                docs[filled : filled + take] = first + j
                filled, pos = filled + take, pos + take
                if filled < n:  # the whole rest of the document was taken: its separator next
                    ids[filled], docs[filled] = self.sep_id, first + j
                    filled, pos, j = filled + 1, pos + 1, j + 1
            part, pos = part + 1, 0
        return ids, docs

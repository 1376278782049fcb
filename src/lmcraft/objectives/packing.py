"""Packed blocks computed on demand from token shards, for corpora larger than memory.

``mlm.pack`` and ``clm.pack_documents`` build every block of a corpus up front, from token lists in
memory. ``PackedBlocks`` gives the same blocks, one at a time when indexed, from a ``TokenStream`` over the
memory-mapped shards: the documents, each followed by [SEP] (the CLM's end of document), cut into chunks
of ``block - 2`` tokens wrapped in [CLS] ... [SEP] (MLM and span corruption) or of ``block`` tokens with
their documents' indices (CLM). Block ``k`` is the stream's tokens ``[k·c, (k + 1)·c)``; a partial last
chunk is dropped, as the eager packers drop it. ``Picked`` is a view of some of a sequence's items (the
train / dev split) that copies none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmcraft.data.corpus.shards import TokenStream
from lmcraft.objectives.clm import DocBlock


class PackedBlocks(Sequence[Any]):
    """Blocks of ``block`` tokens over a token stream: ``[CLS] chunk [SEP]`` lists (``mlm.pack``), or
    ``DocBlock``s with document indices when ``documents`` (``clm.pack_documents``)."""

    def __init__(self, stream: TokenStream, *, block: int, cls_id: int | None = None, documents: bool = False) -> None:
        if not documents and cls_id is None:
            raise ValueError("blocks wrapped in [CLS] ... [SEP] need cls_id")
        self.stream, self.block, self.cls_id, self.documents = stream, block, cls_id, documents
        self.chunk = block if documents else block - 2  # stream tokens per block
        self._len = len(stream) // self.chunk

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"block {k} out of range: there are {len(self)}")
        ids, docs = self.stream.chunk(k * self.chunk, self.chunk)
        if self.documents:
            return DocBlock(ids.tolist(), docs.tolist())
        return [self.cls_id, *ids.tolist(), self.stream.sep_id]


class Picked(Sequence[Any]):
    """The items ``index`` of ``items``, in that order, without copying them."""

    def __init__(self, items: Sequence[Any], index: np.ndarray) -> None:
        self.items, self.index = items, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.items[int(self.index[i])]

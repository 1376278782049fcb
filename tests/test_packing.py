"""Blocks packed on demand from memory-mapped token shards equal the blocks packed in memory (MLM, CLM,
span corruption), and the dev split holds its blocks out of training."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from lmcraft.data.corpus.shards import ShardWriter, TokenShards, TokenStream
from lmcraft.objectives.clm import pack_documents
from lmcraft.objectives.mlm import pack
from lmcraft.objectives.packing import PackedBlocks, Picked
from lmcraft.pretrain import split_blocks

CLS, SEP = 2, 3


def write_shards(directory: Path, documents: list[list[int]], docs_per_shard: int, vocab_size: int = 500) -> Path:
    """A corpus directory as `lmcraft data corpus` writes it (the fields TokenShards reads)."""
    directory.mkdir(parents=True)
    shards = []
    for index, first in enumerate(range(0, len(documents), docs_per_shard)):
        writer = ShardWriter(directory, index, "uint16")
        for doc in documents[first : first + docs_per_shard]:
            writer.add(np.asarray(doc, dtype=np.int64))
        shards.append(asdict(writer.close()))
    manifest = {"dtype": "uint16", "tokenizer": {"vocab_size": vocab_size}, "shards": shards}
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def random_documents(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)  # lengths 0 (an empty document) to 3 blocks' worth
    return [[rng.randrange(5, 500) for _ in range(rng.choice([0, 1, 2, 7, 15, 40, 90]))] for _ in range(n)]


@pytest.fixture()
def corpora(tmp_path: Path) -> tuple[list[TokenShards], list[list[int]]]:
    first, second = random_documents(60, 0), random_documents(25, 1)
    dirs = [write_shards(tmp_path / "a", first, 7), write_shards(tmp_path / "b", second, 10)]
    return [TokenShards(d) for d in dirs], first + second


@pytest.mark.parametrize("block", [8, 16, 64])
def test_lazy_blocks_equal_the_eager_ones(corpora: tuple[list[TokenShards], list[list[int]]], block: int) -> None:
    shards, documents = corpora
    stream = TokenStream(shards, sep_id=SEP)
    assert len(stream) == sum(len(d) + 1 for d in documents) and stream.n_docs == len(documents)
    mlm = PackedBlocks(stream, block=block, cls_id=CLS)  # MLM and span corruption
    assert list(mlm) == pack(documents, block=block, cls_id=CLS, sep_id=SEP)
    clm = PackedBlocks(stream, block=block, documents=True)
    eager = pack_documents(documents, block=block, eos_id=SEP)
    assert len(clm) == len(eager) and all(clm[k] == eager[k] for k in range(len(eager)))
    assert clm[-1] == eager[-1] and mlm[3:5] == list(mlm)[3:5]
    with pytest.raises(IndexError):
        mlm[len(mlm)]


def test_the_stream_reads_any_window(corpora: tuple[list[TokenShards], list[list[int]]]) -> None:
    shards, documents = corpora
    flat = [(t, k) for k, doc in enumerate(documents) for t in [*doc, SEP]]
    stream = TokenStream(shards, sep_id=SEP)
    rng = random.Random(0)
    for _ in range(200):
        start = rng.randrange(len(flat))
        n = rng.randrange(0, len(flat) - start + 1)
        ids, docs = stream.chunk(start, n)
        assert list(zip(ids.tolist(), docs.tolist(), strict=True)) == flat[start : start + n]
    with pytest.raises(IndexError):
        stream.chunk(len(flat) - 2, 3)


def test_the_dev_split_is_held_out_and_copies_nothing(corpora: tuple[list[TokenShards], list[list[int]]]) -> None:
    shards, documents = corpora
    blocks = PackedBlocks(TokenStream(shards, sep_id=SEP), block=16, cls_id=CLS)
    dev, train = split_blocks(blocks, 0.1, seed=3)
    assert isinstance(dev, Picked) and dev.items is blocks and len(dev) == max(1, int(len(blocks) * 0.1))
    assert sorted([*dev.index.tolist(), *train.index.tolist()]) == list(range(len(blocks)))
    eager_dev, eager_train = split_blocks(pack(documents, block=16, cls_id=CLS, sep_id=SEP), 0.1, seed=3)
    assert list(dev) == list(eager_dev) and list(train) == list(eager_train)

"""Exact and near-duplicate removal, in input order: the first copy of a document is kept.

Exact duplicates: an 8-byte BLAKE2b digest of the normalised text goes into ``ExactSet``, an open-addressing
hash table of uint64 (linear probing, at most 70% full, doubled when fuller). A slot is 8 bytes and the
table is 35% to 70% full, so a unique document costs 11 to 23 bytes, 16 on average: ~1.6 GB for 100M unique
documents (exactly 2^28 slots, 2.1 GB, as the table doubled at 94M; while it doubles, the old table is held
too, and the keys move a million at a time). This is the one piece of state that grows with the corpus and
it is the memory bound of the pipeline; a Python ``set`` of the same digests would take ~75 bytes a
document, 7.5 GB. Two different documents share a digest with probability ~n²/2^65 (3e-4 for n = 100M),
and then the second one is dropped.

Near duplicates: MinHash signatures (datasketch ``MinHash``, 64 permutations of the "affine32" scheme) of
shingles — character 5-grams for text that is mostly CJK (30% or more of its characters), word 3-grams
otherwise — go into a datasketch ``MinHashLSH`` index. The index's bands are chosen for recall (8 bands of 8
rows: a pair at Jaccard 0.8 collides with probability 0.77, at 0.9 with 0.99; datasketch's default weights
would pick 5 bands of 11 rows, which find only 36% and 85%), and every candidate is then checked with the
MinHash estimate of the Jaccard similarity (the fraction of equal signature values) against the
threshold, which removes the false candidates the wider bands let in.

The LSH index costs ~4.4 KB per indexed document, its signature included (measured over 400,000 inserts
through a full window: datasketch keeps a bytes key and a Python set per band and document, and removals
fragment the heap a little). Unbounded, the 2.2M documents of the 1 GB benchmark corpus would need ~10 GB,
so only the last ``window`` kept documents are indexed (``--near-dup-window``, default 100,000: ~430 MB,
which keeps the whole process tree of the 1 GB benchmark under 1 GB; 200,000 would not). Older documents
leave the index in the order they came in. The price is recall: a near duplicate whose original lies more
than ``window`` kept documents back is not found. Crawls and news feeds put most near duplicates
(syndicated copies, reposts, boilerplate variants) close to their original in time, which is what a window
catches; a 0 window indexes everything.

datasketch is imported where it is used: it pulls in scipy (0.8 s and ~30 MB), and the tokenizer worker
processes, which import this module for ``shingle_hashes`` and ``MinHasher.signature``, need only numpy.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import TYPE_CHECKING

import numpy as np

from lmcraft.text import CJK_HEAVY, CJK_RANGES  # CJK_HEAVY or more of CJK characters: character shingles

if TYPE_CHECKING:
    from datasketch import LeanMinHash

SCHEME = "affine32"  # datasketch's permutation scheme: uint32 hash values
SEED = 1  # datasketch's default seed for the permutations
LSH_WEIGHTS = (0.2, 0.8)  # (false positive, false negative) weights for datasketch's choice of bands
CHAR_SHINGLE, WORD_SHINGLE = 5, 3
_WORD = re.compile(r"\w+")
_BASE = np.uint64(0x100000001B3)  # the polynomial base of the rolling shingle hash (the 64-bit FNV prime)


def digest64(text: str) -> int:
    """An 8-byte digest of the text, as an unsigned int."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class ExactSet:
    """A set of uint64 digests in one numpy array (linear probing; 0 marks an empty slot)."""

    MAX_LOAD = 0.7

    def __init__(self, table: np.ndarray | None = None) -> None:
        self.table = np.zeros(1 << 16, dtype=np.uint64) if table is None else table  # (capacity,), a power of 2
        self.count = int(np.count_nonzero(self.table))

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: int) -> bool:
        return self._find(key or 1)[1]

    def _find(self, key: int) -> tuple[int, bool]:
        """(slot, found): the key's slot, or the empty slot where it would go."""
        table, mask = self.table, len(self.table) - 1
        i = key & mask
        while True:
            slot = table.item(i)
            if slot == 0 or slot == key:
                return i, slot == key
            i = (i + 1) & mask

    def add(self, key: int) -> bool:
        """Add a digest; True if it was new."""
        key = key or 1  # 0 marks an empty slot
        i, found = self._find(key)
        if found:
            return False
        self.table[i] = key
        self.count += 1
        if self.count > self.MAX_LOAD * len(self.table):
            self.table = rehashed_table(self.table, 2 * len(self.table))
        return True


def rehashed_table(table: np.ndarray, size: int, chunk: int = 1 << 20) -> np.ndarray:
    """The keys of ``table`` in a new table of ``size`` slots, ``chunk`` keys at a time (bounding the
    temporaries to a few times 8 MB). Within a chunk all keys are inserted at once: each round, every key
    whose slot is free competes for it (the first wins), and the keys that met a taken slot step on. A key
    only ever steps past taken slots, so the linear-probing invariant holds."""
    out = np.zeros(size, dtype=np.uint64)
    mask = size - 1
    occupied = np.flatnonzero(table)
    for start in range(0, len(occupied), chunk):
        keys = table[occupied[start : start + chunk]]
        pos = (keys & np.uint64(mask)).astype(np.int64)
        while keys.size:
            free = np.flatnonzero(out[pos] == 0)
            slots, first = np.unique(pos[free], return_index=True)
            winners = free[first]
            out[slots] = keys[winners]
            waiting = np.ones(keys.size, dtype=bool)
            waiting[winners] = False
            keys, pos = keys[waiting], pos[waiting]
            pos = np.where(out[pos] != 0, (pos + 1) & mask, pos)
    return out


def _rolling(values: np.ndarray, k: int) -> np.ndarray:
    """Polynomial hashes of every k consecutive values (uint64 arithmetic wraps, as intended):
    (n,) -> (n - k + 1,), or one hash of all of them when n < k. Built by doubling (2-grams from 1-grams,
    4-grams from 2-grams, ...) and joining the pieces that k's binary digits call for: 3 steps for k = 5."""
    k = min(k, len(values))
    grams, size = values, 1  # hashes of every `size` consecutive values
    out, out_size = None, 0  # hashes of the first `out_size` values of each k-gram, built so far
    while k:
        if k & 1:  # append a `size`-gram
            if out is None:
                out, out_size = grams, size
            else:
                n = min(len(out), len(grams) - out_size)
                out = out[:n] * (_BASE ** np.uint64(size)) + grams[out_size : out_size + n]
                out_size += size
        k >>= 1
        if k:
            grams = grams[: len(grams) - size] * (_BASE ** np.uint64(size)) + grams[size:]
            size *= 2
    assert out is not None
    return out


_CJK_BOUNDS = np.array([bound for start, end in CJK_RANGES for bound in (start, end + 1)],
                       dtype=np.uint32)  # [start, end) of each range of CJK characters, in order


def _cjk_share(codepoints: np.ndarray) -> float:
    """The fraction of non-space characters that are CJK (Han, kana, hangul); codepoints (n,) uint32."""
    inside = np.searchsorted(_CJK_BOUNDS, codepoints, side="right") & 1  # odd: between a start and its end
    chars = len(codepoints) - np.count_nonzero((codepoints == 0x20) | (codepoints == 0x0A))
    return np.count_nonzero(inside) / chars if chars else 0.0


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the text's shingles: character 5-grams if the text is CJK-heavy, else word 3-grams.
    (n_shingles,) uint32; a text shorter than one shingle is one shingle."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (n_chars,)
    words = _WORD.findall(text.lower()) if _cjk_share(codepoints) < CJK_HEAVY else []
    if words:
        h = _rolling(np.array([zlib.crc32(w.encode("utf-8")) for w in words], dtype=np.uint64), WORD_SHINGLE)
    else:
        h = _rolling(codepoints.astype(np.uint64), CHAR_SHINGLE)
    return ((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, which datasketch's "affine32" scheme applies to every input hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHasher:
    """MinHash signatures under datasketch's "affine32" permutations.

    ``signature`` computes what ``datasketch.MinHash(...).update_batch(shingles)`` computes (a test checks
    that they agree bit for bit), in one numpy expression: building a datasketch MinHash per document and
    feeding it through a Python-level loop took 4 times longer."""

    def __init__(self, num_perm: int = 64) -> None:
        self.num_perm = num_perm
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=SEED, scheme=SCHEME).permutations  # (num_perm,) uint32 each
        self.a, self.b = a.astype(np.uint32), b.astype(np.uint32)

    def signature(self, text: str) -> np.ndarray:
        """(num_perm,) uint32: per permutation, the least permuted shingle hash."""
        h = fmix32(shingle_hashes(text))[:, None]  # (n_shingles, 1)
        return (h * self.a + self.b).min(axis=0)  # (n_shingles, num_perm) -> (num_perm,); uint32 wraps


def _sketch(signature: np.ndarray) -> LeanMinHash:
    from datasketch import LeanMinHash

    return LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME)


class NearDupIndex:
    """A MinHashLSH index of the last ``window`` kept documents' signatures (0: of all of them).

    Documents get serial numbers in the order they were added; the signature of document s sits in row
    ``s % window`` of a ring buffer, which is all the state a checkpoint needs (``state`` / ``restore``)."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, window: int = 100_000) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"the near-duplicate threshold must lie in (0, 1], got {threshold}")
        if window < 0:
            raise ValueError(f"the near-duplicate window must be >= 0 (0: no limit), got {window}")
        from datasketch import MinHashLSH

        self.threshold, self.num_perm, self.window = threshold, num_perm, window
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self.signatures = np.zeros((0, num_perm), dtype=np.uint32)  # (rows, num_perm) ring, grown on demand
        self.oldest = self.n_added = 0  # serials: the oldest document in the index, the next one to come

    def __len__(self) -> int:
        return self.n_added - self.oldest

    def _row(self, serial: int) -> int:
        return serial % self.window if self.window else serial

    def add(self, signature: np.ndarray) -> bool:
        """Index a document unless it is a near duplicate of an indexed one (an estimated Jaccard similarity
        of at least the threshold); True if it was new and indexed. ``signature``: (num_perm,) uint32."""
        sketch = _sketch(signature)
        need = self.threshold * self.num_perm
        for serial in self.lsh.query(sketch):
            if np.count_nonzero(self.signatures[self._row(serial)] == signature) >= need:
                return False
        self._insert(signature, sketch)
        return True

    def _insert(self, signature: np.ndarray, sketch: LeanMinHash) -> None:
        if self.window and len(self) >= self.window:
            self.lsh.remove(self.oldest)
            self.oldest += 1
        row = self._row(self.n_added)
        if row >= len(self.signatures):  # grow the ring geometrically, up to the window
            rows = max(1024, 2 * len(self.signatures), row + 1)
            grown = np.zeros((min(rows, self.window) if self.window else rows, self.num_perm), dtype=np.uint32)
            grown[: len(self.signatures)] = self.signatures
            self.signatures = grown
        self.signatures[row] = signature
        self.lsh.insert(self.n_added, sketch, check_duplication=False)
        self.n_added += 1

    def state(self) -> np.ndarray:
        """The indexed signatures, oldest first: (len(self), num_perm) uint32."""
        serials = np.arange(self.oldest, self.n_added)
        return self.signatures[serials % self.window if self.window else serials]

    def restore(self, signatures: np.ndarray, n_added: int) -> None:
        """Rebuild the index from ``state()`` and the number of documents added in all: the same queries
        then give the same answers as the index that was saved."""
        if len(self):
            raise RuntimeError("restore into an empty index")
        self.oldest = self.n_added = n_added - len(signatures)
        for signature in signatures:
            self._insert(signature, _sketch(signature))

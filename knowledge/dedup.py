"""Duplicate chunks: exact (normalised content hash) and near (MinHash + LSH bands).

Signatures come from datasketch's ``MinHash`` over 3-token shingles of the BM25 tokens,
so Chinese is compared by words, not by one-character runs. Band keys are stored in the
catalog's SQLite file, so the LSH index is persistent and incremental (no pickle).

>>> a = minhash_signature("take amoxicillin 500 mg every 8 hours for 7 days".split())
>>> b = minhash_signature("take amoxicillin 500 mg every 8 hours for 10 days".split())
>>> round(jaccard(a, b), 1) >= 0.5
True
>>> content_hash("Take  500 mg.") == content_hash("take 500 mg.")
True
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

NUM_PERM = 64
BANDS, ROWS = 8, 8  # LSH candidate threshold ~ (1/8)^(1/8) = 0.77
NEAR_THRESHOLD = 0.85  # estimated Jaccard for a near-duplicate
SHINGLE = 3
MIN_TOKENS = 8  # shorter chunks are only compared exactly


def content_hash(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def minhash_signature(tokens: list[str]) -> np.ndarray | None:
    if len(tokens) < MIN_TOKENS:
        return None
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    shingles = {" ".join(tokens[i : i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1)}
    m.update_batch([s.encode("utf-8") for s in shingles])
    return m.hashvalues.astype(np.uint64)


def band_keys(signature: np.ndarray) -> list[tuple[int, str]]:
    return [(b, hashlib.sha1(signature[b * ROWS : (b + 1) * ROWS].tobytes()).hexdigest()[:16])
            for b in range(BANDS)]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def find_duplicates(ids: Sequence[str], hashes: Sequence[str],
                    signatures: Sequence[np.ndarray | None],
                    known: Callable[[str, np.ndarray | None], str | None]) -> dict[int, str]:
    """Index of each duplicate chunk -> id of the canonical chunk it repeats: one already
    stored (``known(hash, signature)``: its id, or None) or an earlier one of the same
    document (``ids``, ``hashes``, ``signatures``: its chunks in order); the latter through
    in-memory LSH bands, so a long document is not compared chunk by chunk.

    >>> find_duplicates(["a", "b", "c"], ["h1", "h2", "h1"], [None] * 3,
    ...                 lambda h, sig: "old" if h == "h2" else None)
    {1: 'old', 2: 'a'}
    """
    dup_of: dict[int, str] = {}
    seen_hash: dict[str, int] = {}
    bands: dict[tuple[int, str], list[int]] = {}
    for i, (h, sig) in enumerate(zip(hashes, signatures)):
        if h in seen_hash:
            dup_of[i] = ids[seen_hash[h]]
            continue
        twin = known(h, sig)
        keys = band_keys(sig) if sig is not None else []
        if twin is None and keys:
            near = {j for key in keys for j in bands.get(key, ())}
            twin = next((ids[j] for j in sorted(near)
                         if jaccard(sig, signatures[j]) >= NEAR_THRESHOLD), None)
        if twin is not None:
            dup_of[i] = twin
            continue
        seen_hash[h] = i
        for key in keys:
            bands.setdefault(key, []).append(i)
    return dup_of


def to_blob(signature: np.ndarray) -> bytes:
    return signature.astype("<u8").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)



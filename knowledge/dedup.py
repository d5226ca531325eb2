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


def to_blob(signature: np.ndarray) -> bytes:
    return signature.astype("<u8").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)



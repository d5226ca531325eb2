"""One immutable BM25 segment in a file: the postings of a set of passages as flat numpy
arrays, read through mmap (no pickle, no Python object per posting).

A segment is written once, by ``write_segment`` (passages' term counts) or ``merge``
(the live rows of other segments), and never changed; passages removed later are masked
by the index that holds it (``knowledge.bm25_segmented``). The file, little-endian:

    b"DOCBM25\\n" | header size (uint64) | header (JSON) | arrays, each 64-byte aligned

The header gives the format version, the row (passage) count, the token total, and each
array's dtype, length, offset and CRC-32. The arrays (V terms, N rows, P postings):

    term_keys  uint64  V    64-bit hash of each term, ascending
    term_at    int64   V+1  where each term's UTF-8 bytes lie in ``terms``
    terms      uint8        the terms, UTF-8, concatenated in ``term_keys`` order
    post_at    int64   V+1  term i's postings are rows/tfs[post_at[i]:post_at[i+1]]
    rows       int32   P    row numbers, ascending within each term
    tfs        uint16  P    the term's count in that row (uint32 if one exceeds 65535)
    lengths    int32   N    token count of each row
    id_keys    uint64  N    64-bit hash of each row's chunk id, ascending
    id_rows    int32   N    the row of each ``id_keys`` entry
    id_at      int64   N+1  where each row's chunk id lies in ``ids``
    ids        uint8        chunk ids, UTF-8, concatenated in row order

Opening checks the layout and the checksums of all but ``rows`` and ``tfs`` (reading
those would page the whole file in at every start; ``verify`` checks them too, and a
merge does before it reads them).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "a.seg"
>>> write_segment(path, [("c1", {"insulin": 2, "dose": 1}, 3), ("c2", {"dose": 1}, 1)])
2
>>> seg = Segment(path)
>>> seg.postings("dose"), seg.row_of("c2"), seg.postings("aspirin"), seg.chunk_ids()
((array([0, 1], dtype=int32), array([1, 1], dtype=uint16)), 1, None, ['c1', 'c2'])
"""
from __future__ import annotations

import itertools
import json
import mmap
import os
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from pathlib import Path
from zlib import crc32

import numpy as np

from knowledge.errors import KnowledgeError

MAGIC = b"DOCBM25\n"
FORMAT = 1
ALIGN = 64
BULK = ("rows", "tfs")  # checked by ``verify``, not at every open
ARRAYS = ("term_keys", "term_at", "terms", "post_at", "rows", "tfs", "lengths", "id_keys",
          "id_rows", "id_at", "ids")
STEP = 1 << 22  # postings handled at once by ``merge``


class SegmentError(KnowledgeError):
    """A segment file that cannot be used: missing, cut short, corrupt or of another format."""


def _keys(items: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blake2b(x, digest_size=8).digest() for x in items), "<u8")


def _joined(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``items`` concatenated, and the offsets of each."""
    at = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(x) for x in items], out=at[1:])
    return np.frombuffer(b"".join(items), np.uint8), at


class Segment:
    """A segment file opened read-only; its arrays are views of the mapped file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with path.open("rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise SegmentError(f"BM25 segment {path.name}: {exc}") from exc
        self._specs, self.count, self.total = self._header()
        arrays = {name: self._array(name, check=name not in BULK) for name in ARRAYS}
        self.term_keys, self.term_at, self.terms = (arrays[n] for n in ("term_keys", "term_at", "terms"))
        self.post_at, self.rows, self.tfs = arrays["post_at"], arrays["rows"], arrays["tfs"]
        self.lengths, self.id_keys, self.id_rows = (arrays[n] for n in ("lengths", "id_keys", "id_rows"))
        self.id_at, self.ids = arrays["id_at"], arrays["ids"]
        self._check_layout()

    def _fail(self, what: str) -> SegmentError:
        return SegmentError(f"BM25 segment {self.path.name}: {what}")

    def _header(self) -> tuple[dict, int, int]:
        m = self._map
        if len(m) < 16 or m[:8] != MAGIC:
            raise self._fail("not a segment file")
        size = int.from_bytes(m[8:16], "little")
        try:
            header = json.loads(m[16:16 + size])
        except ValueError as exc:
            raise self._fail(f"unreadable header ({exc})") from exc
        if header.get("format") != FORMAT:
            raise self._fail(f"format {header.get('format')}, this Docent reads {FORMAT}")
        return header["arrays"], header["count"], header["total"]

    def _array(self, name: str, check: bool) -> np.ndarray:
        spec = self._specs.get(name)
        if spec is None:
            raise self._fail(f"no {name} array")
        dtype = np.dtype(spec["dtype"])
        end = spec["offset"] + dtype.itemsize * spec["length"]
        if end > len(self._map):
            raise self._fail(f"cut short ({len(self._map)} bytes, {name} ends at {end})")
        arr = np.frombuffer(self._map, dtype, spec["length"], spec["offset"])
        if check and crc32(arr) != spec["crc"]:
            raise self._fail(f"checksum of {name} does not match")
        return arr

    def _check_layout(self) -> None:
        v, n = len(self.term_keys), self.count
        ok = (len(self.term_at) == len(self.post_at) == v + 1 and len(self.lengths) == n
              and len(self.id_keys) == len(self.id_rows) == n and len(self.id_at) == n + 1
              and self.term_at[-1] == len(self.terms) and self.id_at[-1] == len(self.ids)
              and self.post_at[-1] == len(self.rows) == len(self.tfs)
              and int(self.lengths.sum(dtype=np.int64)) == self.total)
        if not ok:
            raise self._fail("arrays do not fit together")

    def verify(self) -> None:
        """Check the checksums of the posting arrays too (reads the whole file)."""
        for name in BULK:
            self._array(name, check=True)

    # --- lookups --------------------------------------------------------------------
    @staticmethod
    def _find(keys, at, blob, data: bytes, order=None) -> int | None:
        key = np.uint64(int.from_bytes(blake2b(data, digest_size=8).digest(), "little"))
        i = int(np.searchsorted(keys, key))
        while i < len(keys) and keys[i] == key:  # equal hashes: compare the bytes
            j = i if order is None else int(order[i])
            if blob[at[j]:at[j + 1]].tobytes() == data:
                return j
            i += 1
        return None

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(rows, tfs)`` of ``term``, or None when no row holds it."""
        i = self._find(self.term_keys, self.term_at, self.terms, term.encode())
        if i is None:
            return None
        a, b = self.post_at[i], self.post_at[i + 1]
        return self.rows[a:b], self.tfs[a:b]

    def row_of(self, chunk_id: str) -> int | None:
        return self._find(self.id_keys, self.id_at, self.ids, chunk_id.encode(), self.id_rows)

    def chunk_id(self, row: int) -> str:
        return self.ids[self.id_at[row]:self.id_at[row + 1]].tobytes().decode()

    def chunk_ids(self) -> list[str]:
        blob, at = self.ids.tobytes(), self.id_at.tolist()
        return [blob[at[i]:at[i + 1]].decode() for i in range(self.count)]

    def term_list(self) -> list[bytes]:
        blob, at = self.terms.tobytes(), self.term_at.tolist()
        return [blob[at[i]:at[i + 1]] for i in range(len(at) - 1)]


class _Writer:
    """A segment file being written aside: laid out from its arrays' sizes, the big ones
    filled in place (``fill``), then checksummed, synced and renamed over ``path``."""

    def __init__(self, path: Path, count: int, total: int, arrays: dict):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.specs = {name: {"dtype": np.dtype(a[0] if isinstance(a, tuple) else a.dtype).str,
                             "length": a[1] if isinstance(a, tuple) else len(a),
                             "offset": 0, "crc": 0} for name, a in arrays.items()}
        self.header = {"format": FORMAT, "count": count, "total": total, "arrays": self.specs}
        room = len(self._header_bytes(widest=True))
        offset = -(-(16 + room) // ALIGN) * ALIGN
        for spec in self.specs.values():
            spec["offset"] = offset
            offset += -(-np.dtype(spec["dtype"]).itemsize * spec["length"] // ALIGN) * ALIGN
        self.room, self.file = room, self.tmp.open("wb+")
        self.file.truncate(offset)
        for name, a in arrays.items():
            if not isinstance(a, tuple):
                self.file.seek(self.specs[name]["offset"])
                self.file.write(np.ascontiguousarray(a).tobytes())
        self.file.flush()

    def _header_bytes(self, widest: bool = False) -> bytes:
        header = self.header
        if widest:
            wide = {name: {**s, "offset": 10 ** 15, "crc": 2 ** 32} for name, s in self.specs.items()}
            header = {**header, "arrays": wide}
        return json.dumps(header).encode()

    def fill(self, name: str) -> np.ndarray:
        """A writable view of array ``name`` in the file (written by ``commit``)."""
        spec = self.specs[name]
        if not spec["length"]:
            return np.zeros(0, spec["dtype"])
        return np.memmap(self.tmp, spec["dtype"], "r+", spec["offset"], (spec["length"],))

    def commit(self) -> None:
        for spec in self.specs.values():
            self.file.seek(spec["offset"])
            left, crc = np.dtype(spec["dtype"]).itemsize * spec["length"], 0
            while left:
                block = self.file.read(min(left, 1 << 24))
                crc, left = crc32(block, crc), left - len(block)
            spec["crc"] = crc
        self.file.seek(0)
        self.file.write(MAGIC + self.room.to_bytes(8, "little")
                        + self._header_bytes().ljust(self.room))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _write(path: Path, count: int, total: int, arrays: dict, fill=None) -> None:
    """Write a segment file; ``fill(writer)`` fills the arrays given as (dtype, length)."""
    writer = _Writer(path, count, total, arrays)
    try:
        if fill is not None:
            fill(writer)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _id_arrays(ids: list[bytes]) -> dict[str, np.ndarray]:
    keys = _keys(ids)
    order = np.argsort(keys, kind="stable")
    blob, at = _joined(ids)
    return {"id_keys": keys[order], "id_rows": order.astype(np.int32), "id_at": at, "ids": blob}


def write_segment(path: Path, rows: Iterable[tuple[str, Mapping[str, int], int]]) -> int:
    """Write ``rows`` (chunk id, its term counts, its token count), each a row in that
    order, as a segment at ``path``; how many rows."""
    vocab: dict[str, int] = defaultdict(itertools.count().__next__)  # a new term gets the next number
    number = vocab.__getitem__
    term_ids, tfs, widths, lengths, ids = array("i"), array("I"), array("i"), array("i"), []
    for chunk_id, counts, length in rows:
        ids.append(chunk_id.encode())
        lengths.append(length)
        widths.append(len(counts))
        term_ids.extend(map(number, counts))
        tfs.extend(counts.values())
    terms = [t.encode() for t in vocab]
    keys = _keys(terms)
    order = np.argsort(keys, kind="stable")  # position -> term id
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    tid = rank[np.asarray(term_ids, np.int64)]
    by_term = np.argsort(tid, kind="stable")  # rows stay ascending within each term
    post_at = np.zeros(len(terms) + 1, np.int64)
    np.cumsum(np.bincount(tid, minlength=len(terms)), out=post_at[1:])
    tf = np.asarray(tfs, np.uint32)[by_term]
    blob, term_at = _joined([terms[i] for i in order])
    arrays = {"term_keys": keys[order], "term_at": term_at, "terms": blob, "post_at": post_at,
              "rows": np.repeat(np.arange(len(ids), dtype=np.int32), widths)[by_term],
              "tfs": tf.astype(np.uint16) if not len(tf) or tf.max() < 1 << 16 else tf,
              "lengths": np.asarray(lengths, np.int32), **_id_arrays(ids)}
    _write(path, len(ids), sum(lengths), arrays)
    return len(ids)


def merge(path: Path, parts: list[tuple[Segment, np.ndarray | None]]) -> int:
    """Write the rows of ``parts`` (segment, mask of its dead rows or None) that are not
    dead, in order, as one segment at ``path``; how many rows."""
    for seg, _ in parts:
        seg.verify()
    alive = [np.ones(s.count, bool) if dead is None else ~dead for s, dead in parts]
    term_arrays, numbers, counts = _merged_terms(parts, alive)
    row_arrays = _merged_rows(parts, alive)
    post_at = term_arrays["post_at"]
    wide = any(seg.tfs.dtype == np.uint32 for seg, _ in parts)
    arrays = {**term_arrays, "rows": (np.int32, int(post_at[-1])),
              "tfs": (np.uint32 if wide else np.uint16, int(post_at[-1])), **row_arrays}

    def fill(writer: _Writer) -> None:
        out_rows, out_tfs = writer.fill("rows"), writer.fill("tfs")
        cursor, base = post_at[:-1].copy(), 0
        for (seg, _), live, number, c in zip(parts, alive, numbers, counts):
            row_map = np.cumsum(live, dtype=np.int64) - 1 + base
            _copy_postings(seg, live, number, c, row_map, cursor, out_rows, out_tfs)
            base += int(live.sum())
        for out in (out_rows, out_tfs):
            if isinstance(out, np.memmap):
                out.flush()

    count = len(row_arrays["lengths"])
    _write(path, count, int(row_arrays["lengths"].sum(dtype=np.int64)), arrays, fill)
    return count


def _merged_terms(parts, alive) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The term arrays of the merge (every term with a live posting, by hash; ``post_at``
    from the live counts), each part's terms' numbers in it, and each part's live
    postings per term."""
    union: dict[bytes, int] = {}  # every term of the parts -> its number in ``union_keys``
    union_keys: list[int] = []
    maps = [_add_terms(seg, union, union_keys) for seg, _ in parts]
    counts = [_live_counts(seg, live) for (seg, _), live in zip(parts, alive)]
    df = np.zeros(len(union_keys), np.int64)
    for m, c in zip(maps, counts):
        df[m] += c
    kept = np.flatnonzero(df)
    keys = np.asarray(union_keys, np.uint64)
    order = kept[np.argsort(keys[kept], kind="stable")]
    final = np.full(len(union_keys), -1, np.int64)
    final[order] = np.arange(len(order))
    post_at = np.zeros(len(order) + 1, np.int64)
    np.cumsum(df[order], out=post_at[1:])
    terms = list(union)
    blob, term_at = _joined([terms[i] for i in order])
    arrays = {"term_keys": keys[order], "term_at": term_at, "terms": blob, "post_at": post_at}
    return arrays, [final[m] for m in maps], counts


def _add_terms(seg: Segment, union: dict[bytes, int], union_keys: list[int]) -> np.ndarray:
    """Number ``seg``'s terms in ``union`` (new ones added); each term's number."""
    keys, out = seg.term_keys.tolist(), []
    for i, term in enumerate(seg.term_list()):
        number = union.get(term)
        if number is None:
            number = union[term] = len(union_keys)
            union_keys.append(keys[i])
        out.append(number)
    return np.asarray(out, np.int64)


def _live_counts(seg: Segment, live: np.ndarray) -> np.ndarray:
    """How many live rows each of ``seg``'s terms has."""
    if not len(seg.term_keys):
        return np.zeros(0, np.int64)
    if live.all():
        return np.diff(seg.post_at)
    return np.add.reduceat(live.view(np.uint8)[seg.rows], seg.post_at[:-1], dtype=np.int64)


def _merged_rows(parts, alive) -> dict[str, np.ndarray]:
    """The row arrays (lengths and chunk ids) of the live rows of ``parts``, in order."""
    lengths, keys, blobs, sizes = [], [], [], []
    for (seg, _), live in zip(parts, alive):
        rows = np.flatnonzero(live)
        lengths.append(seg.lengths[rows])
        row_keys = np.empty(seg.count, np.uint64)
        row_keys[seg.id_rows] = seg.id_keys
        keys.append(row_keys[rows])
        starts, size = seg.id_at[rows], seg.id_at[rows + 1] - seg.id_at[rows]
        offsets = np.cumsum(size) - size
        blobs.append(seg.ids[np.repeat(starts - offsets, size) + np.arange(int(size.sum()))])
        sizes.append(size)
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    order = np.argsort(all_keys, kind="stable")
    size = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    id_at = np.zeros(len(size) + 1, np.int64)
    np.cumsum(size, out=id_at[1:])
    return {"lengths": np.concatenate(lengths).astype(np.int32) if lengths else np.zeros(0, np.int32),
            "id_keys": all_keys[order], "id_rows": order.astype(np.int32), "id_at": id_at,
            "ids": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)}


def _copy_postings(seg, live, final, counts, row_map, cursor, out_rows, out_tfs) -> None:
    """Copy ``seg``'s live postings to their places in the merged arrays, ``STEP`` at a
    time; ``final``: each of its terms' number in the merge; ``cursor``: where each merged
    term's next posting goes (advanced)."""
    v, a, everyone = len(seg.term_keys), 0, bool(live.all())
    while a < v:
        b = max(a + 1, min(v, int(np.searchsorted(seg.post_at, seg.post_at[a] + STEP, "right")) - 1))
        lo, hi = seg.post_at[a], seg.post_at[b]
        rows, tfs = seg.rows[lo:hi], seg.tfs[lo:hi]
        if not everyone:
            keep = live[rows]
            rows, tfs = rows[keep], tfs[keep]
        c = counts[a:b]
        firsts = np.cumsum(c) - c  # each term's first posting within this step
        dest = np.repeat(cursor[final[a:b]] - firsts, c) + np.arange(len(rows))
        out_rows[dest] = row_map[rows]
        out_tfs[dest] = tfs
        nz = c > 0
        cursor[final[a:b][nz]] += c[nz]
        a = b

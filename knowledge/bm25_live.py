"""The BM25 of one knowledge base, kept on disk in step with its catalog.

``<kb>/bm25/state.json`` names the segment files (``knowledge.bm25_segment``) that make
the index, each one's removed rows (``<segment>.dead-<id>.npy``, row numbers), and the
catalog generation they reflect: every change to the searchable passages is logged by
the catalog in the transaction that makes it (``knowledge.catalog``). Opening maps the
segments and replays the log since that generation, instead of rebuilding BM25 from
every passage's tokens (3.5 s at 20k chunks). A state that is missing, unreadable, of
another format, from another catalog, or further behind than the log can replay is
rebuilt from the catalog (with a warning, unless there was none yet): a stale index is
never searched.

Each committed change goes to the in-memory delta first. Once ``FLUSH`` changes wait,
the delta is written as a new segment, segments of a similar size are merged in tiers
(``FANOUT`` of them become one, so a passage is rewritten a logarithmic number of times
and a search visits few segments), then the state is saved: segment files first and
synced, then the state renamed over the old one, then the log trimmed. A crash at any
point leaves the previous state and a log that brings it up to date; files no state
names are deleted at the next save or open.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np

from knowledge.bm25_segment import Segment, SegmentError, merge, write_segment
from knowledge.bm25_segmented import SegmentedBM25
from knowledge.catalog import Catalog
from knowledge.types import Chunk

log = logging.getLogger(__name__)

STATE = "state.json"
FORMAT = 1
FLUSH = 2000  # changes kept in memory (and replayed from the log at a start) at most
REPLAY = 20000  # a longer log since the saved state is not replayed: the index is rebuilt
BLOCK = 50000  # passages per segment written while rebuilding (then merged into one)
FANOUT = 4  # segments of one size tier merged into one


class StaleState(Exception):
    """Why the saved index cannot be used (it is rebuilt)."""


class LiveBM25(SegmentedBM25):
    """BM25 over ``catalog``'s ready canonical passages, saved under ``folder``; opened on
    first use (``refresh``) or first change (``apply``), then kept up to date per change."""

    def __init__(self, catalog: Catalog, folder: Path):
        super().__init__(catalog.chunks_by_id, catalog.tokens_by_id)
        self.catalog, self.folder = catalog, folder
        self.generation = 0  # the catalog generation this index reflects
        self._loaded, self._saved = False, 0  # ``changes`` when last saved
        self._write_lock = threading.RLock()  # opening, applying, flushing, merging

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def index(self) -> LiveBM25:
        """The index searches use: this object (kept for callers of ``stores.bm25.index``)."""
        return self

    def refresh(self) -> LiveBM25:
        """The index, opened (from disk, or rebuilt from the catalog) on first use."""
        if not self._loaded:
            with self._write_lock:
                if not self._loaded:
                    self._open()
                    self._loaded = True
        return self

    def apply(self, removed: list[str], added: list[str]) -> None:
        """Bring the index up to date after a committed change: the catalog's log since
        the index's generation (the truth), then ``removed`` and ``added`` where the log
        did not already do it (a caller may also drop or add passages by hand)."""
        with self._write_lock:
            if self._loaded:
                self._catch_up()
            else:
                self.refresh()
            for cid in removed:
                self.remove(cid)
            missing = [cid for cid in added if cid not in self]
            for cid, tokens in self.catalog.tokens_by_id(missing).items():
                self.add(cid, tokens)
            if self.changes - self._saved >= FLUSH:
                self._flush()

    def load(self, rows: Iterable[tuple[Chunk, list[str]]]) -> None:
        """Rebuild the index from ``rows``: the catalog's searchable passages now (as
        ``kb check --repair`` reads them), saved at its current generation."""
        with self._write_lock:
            self._build(((c.chunk_id, t) for c, t in rows), self.catalog.generation())
            self._loaded = True

    # --- opening --------------------------------------------------------------------
    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._read_state()
        except (StaleState, SegmentError) as exc:
            missing = not (self.folder / STATE).exists()
            (log.info if missing else log.warning)(
                "BM25 of %s: %s; building it from the catalog", self.folder.parent.name, exc)
            self._rebuild()
        self._sweep()

    def _read_state(self) -> None:
        try:
            state = json.loads((self.folder / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StaleState("no saved index yet") from None
        except (OSError, ValueError) as exc:
            raise StaleState(f"unreadable {STATE} ({exc})") from exc
        if state.get("format") != FORMAT:
            raise StaleState(f"saved in format {state.get('format')}, this Docent reads {FORMAT}")
        if [state.get("k1"), state.get("b")] != [self.k1, self.b]:
            raise StaleState(f"saved with k1 {state.get('k1')} and b {state.get('b')}")
        if state.get("catalog") != self.catalog.catalog_id:
            raise StaleState("saved for another catalog")
        try:
            entries = [(entry["file"], entry.get("dead")) for entry in state["segments"]]
        except (KeyError, TypeError) as exc:
            raise StaleState(f"{STATE} names no segments ({exc!r})") from exc
        segments = [Segment(self.folder / name) for name, _ in entries]
        self.replace(segments, [self._read_dead(seg, dead) for seg, (_, dead) in zip(segments, entries)])
        self.generation, self._saved = state["generation"], self.changes
        if not self._catch_up(rebuild=False):
            raise StaleState(f"saved at change {state['generation']}, the catalog is at "
                             f"{self.catalog.generation()} and its log cannot bring it up to date")

    def _read_dead(self, seg: Segment, name: str | None) -> np.ndarray | None:
        if not name:
            return None
        try:
            rows = np.load(self.folder / name, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StaleState(f"unreadable {name} ({exc})") from exc
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= seg.count)):
            raise StaleState(f"{name} does not fit {seg.path.name}")
        dead = np.zeros(seg.count, bool)
        dead[rows] = True
        return dead

    def _catch_up(self, rebuild: bool = True) -> bool:
        """Replay the catalog's changes since ``generation``; when the log cannot, rebuild
        (or, with ``rebuild`` False, say so)."""
        found = self.catalog.changes_since(self.generation, REPLAY)
        if found is None:
            if rebuild:
                log.warning("BM25 of %s is too far behind the catalog's log; rebuilding it",
                            self.folder.parent.name)
                self._rebuild()
            return False
        generation, changes = found
        wanted = list({cid for cid, added in changes if added})
        tokens = self.catalog.tokens_by_id(wanted) if wanted else {}
        for cid, added in changes:
            if not added:
                self.remove(cid)
            elif cid in tokens:  # else gone again later in the log
                self.add(cid, tokens[cid])
        self.generation = generation
        return True

    # --- building and saving --------------------------------------------------------
    def _rebuild(self) -> None:
        with self.catalog.searchable_tokens() as (generation, rows):
            self._build(rows, generation)
        self._catch_up()  # what was written meanwhile

    def _build(self, rows: Iterable[tuple[str, list[str]]], generation: int) -> None:
        """Make the index of ``rows`` (the catalog at ``generation``) and save it."""
        rows, blocks = iter(rows), []
        while part := list(islice(rows, BLOCK)):
            path = self._new_path()
            write_segment(path, ((cid, Counter(t), len(t)) for cid, t in part))
            blocks.append(Segment(path))
            log.info("BM25 of %s: %d passages indexed", self.folder.parent.name,
                     sum(b.count for b in blocks))
        if len(blocks) > 1:
            path = self._new_path()
            merge(path, [(b, None) for b in blocks])
            blocks = [Segment(path)]
        self.replace(blocks, [None] * len(blocks))
        self.generation = generation
        self._save()

    def _flush(self) -> None:
        """Write the delta as a segment, merge what the tiers say, save the state."""
        with self._lock:  # a small write: searches wait for it
            rows = self.delta.rows()
            if rows:
                path = self._new_path()
                write_segment(path, rows)
                self.replace(self.segments + [Segment(path)], self.dead + [None])
        while (first := self._merge_from()) is not None:
            self._merge(first)
        self._save()

    def _merge_from(self) -> int | None:
        """The first of the newest segments to merge: ``FANOUT`` or more in the lowest
        size tier, or from a segment that lost half its rows; None: nothing to merge."""
        segments, dead, _ = self.parts()
        live = [s.count - (int(d.sum()) if d is not None else 0) for s, d in zip(segments, dead)]
        for i, (seg, n) in enumerate(zip(segments, live)):
            if 2 * n < seg.count:
                return i
        tier = [int(math.log(max(n, FLUSH) / FLUSH, FANOUT)) for n in live]
        first = len(live)
        while first > 0 and tier[first - 1] <= tier[-1]:
            first -= 1
        return first if len(live) - first >= FANOUT else None

    def _merge(self, first: int) -> None:
        """Merge segments ``first``.. into one; searches go on meanwhile."""
        segments, dead, _ = self.parts()
        path = self._new_path()
        merge(path, list(zip(segments[first:], dead[first:])))
        merged = Segment(path)
        with self._lock:  # removals made since: carry them over
            mask = np.zeros(merged.count, bool)
            for seg, before, now in zip(segments[first:], dead[first:], self.dead[first:]):
                if now is not None:
                    gone = now if before is None else now & ~before
                    for row in np.flatnonzero(gone).tolist():
                        mask[merged.row_of(seg.chunk_id(row))] = True
            self.replace(self.segments[:first] + [merged],
                         self.dead[:first] + [mask if mask.any() else None], self.delta)

    def _save(self) -> None:
        """Save the segments and their masks at ``generation`` (the delta is empty)."""
        with self._lock:
            segments, dead, changes = list(self.segments), list(self.dead), self.changes
        entries = []
        for seg, mask in zip(segments, dead):
            entry = {"file": seg.path.name}
            if mask is not None and mask.any():
                entry["dead"] = f"{seg.path.name}.dead-{uuid.uuid4().hex[:8]}.npy"
                _write_atomic(self.folder / entry["dead"],
                              lambda f, m=mask: np.save(f, np.flatnonzero(m).astype(np.int32)))
            entries.append(entry)
        state = {"format": FORMAT, "catalog": self.catalog.catalog_id, "k1": self.k1,
                 "b": self.b, "generation": self.generation, "segments": entries}
        _write_atomic(self.folder / STATE, lambda f: f.write(json.dumps(state).encode()))
        self._saved = changes
        self.catalog.trim_changes(self.generation)
        self._sweep(state)

    def _sweep(self, state: dict | None = None) -> None:
        """Delete the files of the folder that the saved state does not name."""
        if state is None:
            try:
                state = json.loads((self.folder / STATE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return
        keep = {STATE} | {e[k] for e in state.get("segments", []) for k in ("file", "dead") if k in e}
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def _new_path(self) -> Path:
        return self.folder / f"seg-{uuid.uuid4().hex[:16]}.bm25"


def _write_atomic(path: Path, write) -> None:
    """``write(file)`` into a file aside, synced, then renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

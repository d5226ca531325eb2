"""A change of embedder: every passage embedded again into a new collection, then one
switch of the manifest.

Two steps, kept apart so the vectors may come from elsewhere: ``embed_chunks`` embeds
the catalog's passages with the new embedder, batch by batch; ``install`` writes batches
of ``(chunk ids, vectors)`` into a new collection and switches the manifest to it once
all are in. ``change_embedder`` runs one after the other in this process.

Nothing is lost on the way: searches use the old vectors until the switch, the catalog
(the truth) is only read, and ``reembed.json`` records the change while it runs, so
``finish`` at the next open completes it (the manifest names the new collection: the old
one goes) or undoes it (the half-built collection goes).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator

import numpy as np

from knowledge.catalog import Catalog
from knowledge.embedders import Embedder
from knowledge.manifest import new_collection, write_json
from knowledge.stores import Stores
from knowledge.vectors import VectorIndex

log = logging.getLogger(__name__)

REEMBED = "reembed.json"  # a change of embedder in progress: {"from", "to", "embedder"}

Batch = tuple[list[str], np.ndarray]  # chunk ids and their vectors, one row each


def change_embedder(stores: Stores, embedder: Embedder, batch: int = 64
                    ) -> Iterator[tuple[int, int]]:
    """Move ``stores`` to ``embedder`` (both steps here), yielding ``(done, total)``.
    Nothing to do when nothing is stored yet or it already uses ``embedder``. Writes wait
    until it is done."""
    with stores.lock:
        if stores.vectors is None or stores.vectors.embedder.name == embedder.name:
            return
        ids = stores.catalog.canonical_ids()
        log.info("Knowledge base %s: re-embedding %d passages with %s", stores.name,
                 len(ids), embedder.name)
        yield from install(stores, embedder, embed_chunks(stores.catalog, embedder, ids, batch),
                           len(ids))


def embed_chunks(catalog: Catalog, embedder: Embedder, ids: list[str], batch: int = 64
                 ) -> Iterator[Batch]:
    """Step one: the passages ``ids`` of ``catalog`` embedded with ``embedder``, ``batch``
    at a time, as they are indexed (heading and text)."""
    for start in range(0, len(ids), batch):
        chunks = list(catalog.chunks_by_id(ids[start:start + batch]).values())
        yield ([c.chunk_id for c in chunks],
               embedder.embed_passages([c.index_text for c in chunks]))


def install(stores: Stores, embedder: Embedder, batches: Iterable[Batch], total: int
            ) -> Iterator[tuple[int, int]]:
    """Step two: write ``batches`` (vectors made by ``embedder``) into a new collection,
    yielding ``(done, total)``, then switch the manifest to it and drop the old one.
    Passages no longer in the catalog are skipped. The caller holds ``stores.lock``."""
    collection = new_collection()
    write_json(stores.root / REEMBED, {"from": stores.manifest.collection,
                                       "to": collection, "embedder": embedder.name})
    target = VectorIndex(stores.client, collection, embedder)
    yield 0, total
    done = 0
    for ids, vectors in batches:
        chunks = stores.catalog.chunks_by_id(ids)
        keep = [i for i, cid in enumerate(ids) if cid in chunks]
        target.upsert([chunks[ids[i]] for i in keep], np.asarray(vectors)[keep])
        done += len(ids)
        yield min(done, total), total
    stores.update_manifest(collection=collection, embedder=embedder.name,
                           embedder_dim=embedder.dim)
    stores.vectors = target
    finish(stores)


def finish(stores: Stores) -> None:
    """Complete or undo a change of embedder that ``install`` recorded: once the manifest
    names the new collection the old one goes (with the heading vectors, which belong to
    the old embedder); before that, the new one goes."""
    marker = stores.root / REEMBED
    if not marker.is_file():
        return
    record = json.loads(marker.read_text(encoding="utf-8"))
    done = stores.manifest.collection == record["to"]
    if done:
        stores.catalog.clear_heading_vectors()
    drop_collection(stores.client, record["from"] if done else record["to"])
    marker.unlink()
    if not done:
        log.warning("Knowledge base %s: an unfinished change of embedder was undone; "
                    "it is still searched with %s", stores.name, stores.manifest.embedder)


def drop_collection(client, name: str) -> None:
    try:
        client.delete_collection(name)
    except Exception as exc:  # noqa: BLE001 - an absent collection is what we want
        log.debug("Collection %s not dropped: %s", name, exc)

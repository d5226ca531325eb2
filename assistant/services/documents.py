"""Knowledge bases and their documents: create, rename, delete, status facts, profiles,
ingestion (files, uploads, folder sync, re-reading) and the document list."""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.profiles import Profile, save_profile
from assistant.services.bases import KnowledgeBases
from assistant.services.index_jobs import REEMBED, TRAIN_RERANKER, IndexJobs
from assistant.settings import RetrievalSettings
from common.jobs import TaskRecord
from ingest.chunking import ChunkingParams
from ingest.pipeline import (
    IngestItem, folder_items, ingest_files, outdated_documents, reread_documents, sync_folder,
    within,
)
from ingest.types import IngestEvent, IngestReport
from knowledge.check import ConsistencyReport
from knowledge.errors import KnowledgeError
from knowledge.rerank import RerankerRecord, current_reranker
from knowledge.types import DocumentRecord

Ingestion = Generator[IngestEvent, None, IngestReport]


@dataclass(frozen=True)
class RerankerState:
    """What reorders a knowledge base's hits: the configured choice and what it has."""

    choice: str  # retrieval.reranker: "none", "auto", "trained" or "cross-encoder"
    cross_encoder: str  # retrieval.reranker_model (used when the choice is "cross-encoder")
    rerank_top: int  # retrieval.rerank_top: how many hits a reranker reorders
    trained: RerankerRecord | None  # the knowledge base's current trained reranker

    @property
    def uses_trained(self) -> bool:
        return self.trained is not None and self.choice in ("auto", "trained")


@dataclass(frozen=True)
class KnowledgeBaseStatus:
    name: str
    documents: int
    chunks: int
    embedder: str  # knowledge.language.AUTO until the first document chooses it
    language: str  # the language the embedder was chosen for ("" when not chosen by one)
    reranker: RerankerState
    jobs: tuple[TaskRecord, ...]  # the latest re-embedding, then reranker training, if any
    outdated: int  # documents read by an earlier reader (see ``reread``)


class Documents:
    def __init__(self, bases: KnowledgeBases, chunking: ChunkingParams, max_file_mb: float,
                 retrieval: RetrievalSettings, index_jobs: IndexJobs):
        self._bases, self._chunking = bases, chunking
        self._max_bytes = int(max_file_mb * 2**20)
        self._retrieval, self._index_jobs = retrieval, index_jobs

    # --- knowledge bases -------------------------------------------------------
    def knowledge_bases(self) -> list[str]:
        return self._bases.library.names()

    def create_knowledge_base(self, name: str, embedder: str | None = None) -> None:
        """``embedder``: "auto" (default: from the first document's language), an
        installed embedder's name, or a sentence-transformers folder."""
        self._bases.library.create(name, embedder)

    def rename_knowledge_base(self, old: str, new: str) -> None:
        self._bases.library.rename(old, new)

    def delete_knowledge_base(self, name: str) -> None:
        self._bases.library.delete(name)

    def status(self, kb: str | None = None) -> KnowledgeBaseStatus:
        """Size, embedder, reranker, latest background jobs and outdated documents."""
        base = self._bases.get(kb)
        m = base.manifest
        jobs = (self._index_jobs.latest(kind, base.name) for kind in (REEMBED, TRAIN_RERANKER))
        r = self._retrieval
        reranker = RerankerState(r.reranker, r.reranker_model, r.rerank_top,
                                 current_reranker(base.root))
        return KnowledgeBaseStatus(base.name, len(base.documents()), base.chunk_count(),
                                   m.embedder, m.language or "", reranker,
                                   tuple(j for j in jobs if j is not None),
                                   len(outdated_documents(base)))

    def profile(self, kb: str | None = None) -> Profile:
        return self._bases.profile(kb)

    def set_profile(self, profile: Profile, kb: str | None = None) -> None:
        save_profile(self._bases.get(kb).root, profile)

    # --- documents -------------------------------------------------------------
    def list(self, kb: str | None = None) -> list[DocumentRecord]:
        return self._bases.get(kb).documents()

    def delete(self, doc_id: str, kb: str | None = None) -> None:
        self._bases.get(kb).delete_document(doc_id)

    def resolve(self, refs: Sequence[str], kb: str | None = None) -> list[str]:
        """Document ids for ``refs``: ids or file names as ``list(kb)`` gives them."""
        base = self._bases.get(kb)
        ids = {d.doc_id for d in base.documents()}
        out: list[str] = []
        for ref in refs:
            record = None if ref in ids else base.find_document(ref)
            if ref not in ids and record is None:
                raise KnowledgeError(f"No document {ref!r} in knowledge base {base.name!r}: "
                                     "give a file name or id as `kb docs` lists them.")
            out.append(ref if record is None else record.doc_id)
        return [*dict.fromkeys(out)]

    # --- ingestion -------------------------------------------------------------
    def check(self, kb: str | None = None, repair: bool = False, every: bool = False
              ) -> list[ConsistencyReport]:
        """Whether ``kb``'s (or, ``every``, each knowledge base's) catalog, vectors and
        BM25 agree; ``repair`` makes them agree (``knowledge.check``)."""
        names = self._bases.library.names() if every else [self._bases.name(kb)]
        return [self._bases.library.get(name).check(repair) for name in names]

    def ingest(self, items: Sequence[IngestItem | Path | str], kb: str | None = None,
               password: str | None = None) -> Ingestion:
        """Progress events while ingesting files and folders; returns the report (see
        ``ingest.pipeline.drain``). ``password`` opens encrypted PDFs in this batch."""
        return ingest_files(self._bases.get(kb), _expand(items, password), self._chunking,
                            self._max_bytes)

    def ingest_uploads(self, paths: Sequence[Path | str], kb: str | None = None,
                       password: str | None = None, names: Sequence[str] = ()) -> Ingestion:
        """``ingest`` for uploaded files: each is shown and cited by its name in ``names``
        (default: its file name), and no origin is kept (an upload is no synced folder)."""
        names = list(names) or [Path(p).name for p in paths]
        if len(names) != len(paths):
            raise ValueError(f"{len(paths)} uploads but {len(names)} names.")
        items = [IngestItem(Path(p), name, "", password) for p, name in zip(paths, names)]
        return ingest_files(self._bases.get(kb), items, self._chunking, self._max_bytes)

    def sync_folder(self, folder: Path | str, kb: str | None = None,
                    access: FolderAccess | None = None) -> Ingestion:
        """Make ``kb`` match ``folder`` (add, replace changed, delete removed files).
        ``access``: the folders a web session may read (the CLI passes none)."""
        folder = Path(folder).expanduser()
        inside = None
        if access is not None:
            folder, inside = access.check(folder), access.roots
        return sync_folder(self._bases.get(kb), folder, self._chunking, self._max_bytes,
                           inside=inside)

    def reread(self, kb: str | None = None) -> Ingestion:
        """Read again the documents of ``kb`` that an older reader read (e.g. PDFs from
        before headings were found), from their stored originals."""
        return reread_documents(self._bases.get(kb), self._chunking, self._max_bytes)


@dataclass(frozen=True)
class FolderAccess:
    """Which folders a web session may make the server read: ``roots`` (resolved) and
    their subfolders; with no roots, any folder when ``anywhere`` (a loopback bind with
    no list: one person on their own computer), else none."""

    roots: tuple[Path, ...] = ()
    anywhere: bool = False

    @classmethod
    def for_server(cls, allowed: list[Path], loopback: bool) -> "FolderAccess":
        roots = tuple(Path(p).expanduser().resolve() for p in allowed)
        return cls(roots, anywhere=loopback and not roots)

    def check(self, folder: Path) -> Path:
        """``folder`` resolved (symlinks, ``..``), or an error when it is not allowed."""
        real = Path(folder).expanduser().resolve()
        if self.anywhere or within(real, self.roots):
            return real
        if not self.roots:
            raise FolderNotAllowed(
                "Syncing a folder from the page is off on a server that other machines can "
                "reach. An admin lists the folders it may read in server.allowed_folders "
                "(e.g. DOCENT_SERVER__ALLOWED_FOLDERS='[\"/srv/clinic-docs\"]').")
        raise FolderNotAllowed(
            f"{folder} is not inside the folders this server may read ("
            + ", ".join(str(r) for r in self.roots) + "): pick a folder under one of them.")


class FolderNotAllowed(KnowledgeError):
    """A web session asked for a folder outside ``server.allowed_folders``."""


def _expand(items: Sequence[IngestItem | Path | str], password: str | None) -> list[IngestItem]:
    out: list[IngestItem] = []
    for item in items:
        if isinstance(item, IngestItem):
            out.append(item if password is None
                       else IngestItem(item.path, item.source, item.origin, password))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            out.extend(folder_items(path, password))
        else:
            out.append(IngestItem(path, path.name, str(path.resolve()), password))
    return out

"""The words for the status facts the services return (``Documents.status``): shown as
Markdown by the web page and printed by ``python -m assistant kb status``."""
from __future__ import annotations

from assistant.services.documents import KnowledgeBaseStatus, RerankerState
from knowledge.check import ConsistencyReport
from knowledge.language import AUTO


def consistency(report: ConsistencyReport) -> str:
    """One knowledge base's consistency check, a line per kind of disagreement.

    >>> print(consistency(ConsistencyReport("clinic", 40)))
    clinic: consistent (40 passages; the catalog, the vectors and BM25 agree).
    >>> print(consistency(ConsistencyReport("clinic", 40, ("a", "b"), duplicate_documents=("x.txt",))))
    clinic: 40 passages in the catalog;
      2 missing from the vector store
      1 extra copy of a stored file (x.txt)
      run `python -m assistant kb check --repair --kb clinic` to mend it.
    """
    if report.consistent:
        what = "repaired; they agree now" if report.repaired else \
            "the catalog, the vectors and BM25 agree"
        return f"{report.knowledge_base}: consistent ({report.passages} passages; {what})."
    parts = [(report.missing_vectors, "missing from the vector store"),
             (report.orphan_vectors, "in the vector store but not in the catalog (orphans)"),
             (report.missing_bm25, "missing from BM25"),
             (report.orphan_bm25, "in BM25 but not in the catalog")]
    lines = [f"{report.knowledge_base}: {report.passages} passages in the catalog;"]
    lines += [f"  {len(ids)} {words}" for ids, words in parts if ids]
    if report.duplicate_documents:
        n = len(report.duplicate_documents)
        lines.append(f"  {n} extra cop{'y' if n == 1 else 'ies'} of a stored file "
                     f"({', '.join(report.duplicate_documents[:5])})")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append("  repaired." if report.repaired else
                 f"  run `python -m assistant kb check --repair --kb {report.knowledge_base}` "
                 "to mend it.")
    return "\n".join(lines)


def knowledge_base_status(status: KnowledgeBaseStatus) -> str:
    """Size, embedder, reranker, latest background jobs and outdated documents.

    >>> from assistant.services.documents import RerankerState
    >>> none = RerankerState("cross-encoder", "bge-reranker", 20, None)
    >>> print(knowledge_base_status(KnowledgeBaseStatus(
    ...     "clinic", 2, 14, "e5", "en", none, (), 0)))
    **clinic**: 2 documents, 14 chunks. Embedder: e5 (chosen for en text).
    <BLANKLINE>
    Reranker: cross-encoder from bge-reranker.
    """
    embedder = (status.embedder + (f" (chosen for {status.language} text)"
                                   if status.language else "")
                if status.embedder != AUTO else "chosen from the language of the first document")
    lines = [f"**{status.name}**: {status.documents} documents, {status.chunks} chunks. "
             f"Embedder: {embedder}.", "Reranker: " + reranker_status(status.reranker)]
    lines += [job.describe() for job in status.jobs]
    if status.outdated:
        lines.append(f"{status.outdated} document(s) were read by an earlier Docent (PDFs "
                     "without section headings): *Read old documents again* reads them anew.")
    return "\n\n".join(lines)


def reranker_status(state: RerankerState) -> str:
    """What reorders the hits, and how to change it."""
    record = state.trained
    if state.choice == "cross-encoder":
        return f"cross-encoder from {state.cross_encoder}."
    if state.uses_trained:
        return (f"trained v{record.version} ({record.questions} generated questions, "
                f"{record.created_at[:10]}); it reorders the top "
                f"{state.rerank_top} hits together with the hybrid order.")
    why = ("none: answers use the hybrid (keyword + vector) order. No reranker that runs "
           "offline on this computer improved that order on the evaluation sets "
           "(benchmarks/retrieval.md), so none is the default.")
    if record is not None:
        return (why + f" This knowledge base has a trained reranker (v{record.version}); "
                "set retrieval.reranker to 'trained' to use it.")
    return why + (" You can train one for this knowledge base and select it with "
                  "retrieval.reranker = 'trained'.")

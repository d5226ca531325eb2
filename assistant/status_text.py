"""The words for the status facts the services return (``Documents.status``): shown as
Markdown by the web page and printed by ``python -m assistant kb status``."""
from __future__ import annotations

from assistant.services.documents import KnowledgeBaseStatus, RerankerState
from knowledge.language import AUTO


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

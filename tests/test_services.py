"""The services ``Assistant`` composes, one at a time (hash embedder, scripted LLM): the
default knowledge base when none is given, status as facts (and the words for them at
the edge), ingestion from plain upload paths, the base-model list, conversations,
tasks, datasets and the chat-model choice."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from assistant.core import Assistant
from assistant.profiles import preset
from assistant.services.bases import KnowledgeBases
from assistant.services.documents import Documents, KnowledgeBaseStatus, RerankerState
from assistant.services.index_jobs import REEMBED, TRAIN_RERANKER
from assistant.status_text import knowledge_base_status, reranker_status
from assistant.types import Answer
from common.models import DEFAULT_MODELS
from ingest.chunking import ChunkingParams
from ingest.pipeline import drain
from knowledge.errors import KnowledgeError
from knowledge.library import Library
from knowledge.rerank import RerankerRecord
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM

LEAFLET = ("Hand hygiene\n\nWash your hands with soap and water for at least 20 seconds. "
           "Dry them with a clean paper towel.\n")


@pytest.fixture
def docent(tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("Wash for 20 seconds [1]."),
                  embedder=HashEmbedder())
    yield a
    a.close()


def _upload(tmp_path, text: str = LEAFLET):
    """A file as Gradio keeps an upload: a temporary name, not the one the user chose."""
    path = tmp_path / "uploads" / "tmp8f3k2l.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- documents -------------------------------------------------------------------
def test_uploads_are_ingested_from_plain_paths_under_their_display_names(docent, tmp_path):
    report = drain(docent.documents.ingest_uploads([str(_upload(tmp_path))],
                                                   names=["Hand hygiene leaflet.txt"]))
    assert [r.source for r in report.results] == ["Hand hygiene leaflet.txt"]
    # no knowledge base given: the default one
    (record,) = docent.documents.list()
    assert record.source == "Hand hygiene leaflet.txt"
    assert docent.documents.list(docent.settings.default_kb) == [record]
    assert docent.documents.resolve(["Hand hygiene leaflet.txt"]) == [record.doc_id]


def test_an_upload_without_a_name_keeps_its_file_name_and_names_must_match(docent, tmp_path):
    drain(docent.documents.ingest_uploads([_upload(tmp_path)]))
    assert [d.source for d in docent.documents.list()] == ["tmp8f3k2l.txt"]
    with pytest.raises(ValueError, match="1 uploads but 2 names"):
        docent.documents.ingest_uploads([_upload(tmp_path)], names=["a.txt", "b.txt"])


def test_status_is_facts_of_the_chosen_or_default_knowledge_base(docent, tmp_path):
    drain(docent.documents.ingest([_upload(tmp_path)]))
    docent.documents.create_knowledge_base("empty")
    status = docent.documents.status()
    assert isinstance(status, KnowledgeBaseStatus)
    assert (status.name, status.documents, status.embedder, status.outdated) == (
        "default", 1, "hash-embedder", 0)
    assert status.chunks >= 1 and status.jobs == ()
    assert status.reranker == RerankerState("none", docent.settings.retrieval.reranker_model,
                                            docent.settings.retrieval.rerank_top, None)
    assert (docent.documents.status("empty").documents, docent.documents.status("empty").name
            ) == (0, "empty")
    assert docent.documents.knowledge_bases() == ["default", "empty"]


def test_documents_service_stands_alone_on_a_library(tmp_path):
    """Built from what it needs, with no ``Assistant`` around it."""
    settings = make_settings(tmp_path)
    library = Library(tmp_path / "kb", _pool(), 220, 40)
    library.get("clinic", create=True)
    bases = KnowledgeBases(library, "clinic", "general")
    jobs = SimpleNamespace(latest=lambda kind, kb: None)
    documents = Documents(bases, ChunkingParams(220, 40), 5.0, settings.retrieval, jobs)
    drain(documents.ingest([_upload(tmp_path)]))
    assert documents.status().name == "clinic" and documents.status().documents == 1
    assert documents.profile() == preset("general")
    documents.set_profile(preset("medical"))
    assert documents.profile("clinic") == preset("medical")
    library.close()


def _pool():
    from knowledge.embedders import EmbedderPool

    return EmbedderPool.fixed(HashEmbedder())


def test_the_default_knowledge_base_is_decided_in_one_place(tmp_path):
    bases = KnowledgeBases(None, "clinic", "general")
    assert bases.name(None) == bases.name("") == "clinic"
    assert bases.name("leaflets") == "leaflets"
    assert bases.names(None) == ["clinic"] and bases.names("a") == ["a"]
    assert bases.names(("a", "b")) == ["a", "b"]


# --- status words at the edge ------------------------------------------------------
def test_the_status_words_keep_their_wording():
    trained = RerankerRecord(version=2, path="v2", base_model="m", questions=120, groups=40,
                             loss_first=1.0, loss_last=0.2, created_at="2026-03-01T10:00:00")
    job = SimpleNamespace(describe=lambda: "re-embedding finished in 0.1 min. e5")
    status = KnowledgeBaseStatus("clinic", 3, 40, "auto", "",
                                 RerankerState("auto", "", 20, trained), (job,), 2)
    text = knowledge_base_status(status)
    assert text.startswith("**clinic**: 3 documents, 40 chunks. Embedder: chosen from the "
                           "language of the first document.\n\nReranker: trained v2 (120 "
                           "generated questions, 2026-03-01); it reorders the top 20 hits")
    assert "\n\nre-embedding finished in 0.1 min. e5\n\n2 document(s) were read by an " \
           "earlier Docent" in text
    assert reranker_status(RerankerState("none", "", 20, trained)).endswith(
        "This knowledge base has a trained reranker (v2); set retrieval.reranker to "
        "'trained' to use it.")
    assert reranker_status(RerankerState("none", "", 20, None)).startswith("none: answers use")


# --- background work on an index ---------------------------------------------------
def test_index_jobs_refuse_a_needless_reembed_and_report_no_job_yet(docent):
    assert docent.index_jobs.latest(REEMBED) is None
    assert docent.index_jobs.latest(TRAIN_RERANKER, "default") is None
    with pytest.raises(KnowledgeError, match="Knowledge base 'default'"):
        docent.index_jobs.reembed()  # refused before any job starts
    assert docent.index_jobs.latest(REEMBED) is None
    assert docent.index_jobs.reembed_for("How long do I wash my hands?", ["default"]) == []


def test_a_knowledge_base_asked_in_another_language_moves_to_the_across_embedder(tmp_path):
    across = tmp_path / "better-embedder"  # assembled (the worker would load this folder)
    across.mkdir()
    a = Assistant(make_settings(tmp_path, embedder={"across": str(across)}),
                  llm=ScriptedLLM("Wash for 20 seconds [1]."), embedder=HashEmbedder())
    try:
        drain(a.documents.ingest_uploads([_upload(tmp_path)], names=["leaflet.txt"]))
        assert a.library.manifest("default").language == "en"
        assert a.index_jobs.reembed_for("How long do I wash my hands?", ["default"]) == []
        assert a.index_jobs.latest(REEMBED, "default") is None
        # asked in Vietnamese: moved in the background, searchable meanwhile
        assert a.index_jobs.reembed_for("Rửa tay bao lâu?", ["default"]) == ["default"]
        job = a.index_jobs.latest(REEMBED, "default")
        assert job.params["embedder"] == str(across)
        assert a.chat.search("wash hands soap")
        # the next question does not start another (the job runs, or failed to load
        # this empty folder and is not retried by every question)
        a.index_jobs.reembed_for("洗手要多久？", ["default"])
        assert [j.id for j in a.jobs.list(REEMBED)] == [job.id]
    finally:
        a.close()


def test_without_the_across_embedder_a_multilingual_base_stays_as_it_is(tmp_path):
    a = Assistant(make_settings(tmp_path, embedder={"across": str(tmp_path / "missing")}),
                  llm=ScriptedLLM("x"), embedder=HashEmbedder())
    try:
        drain(a.documents.ingest_uploads([_upload(tmp_path)], names=["leaflet.txt"]))
        assert a.index_jobs.reembed_for("Rửa tay bao lâu?", ["default"]) == []
        assert a.index_jobs.latest(REEMBED, "default") is None
    finally:
        a.close()


# --- chat and conversations -----------------------------------------------------------
def test_chat_searches_and_answers_over_the_default_knowledge_base(docent, tmp_path):
    drain(docent.documents.ingest_uploads([_upload(tmp_path)], names=["leaflet.txt"]))
    hits = docent.chat.search("wash hands soap")
    assert hits and hits[0].chunk.source == "leaflet.txt"
    answer = docent.chat.answer("How long do I wash my hands?")
    assert isinstance(answer, Answer) and answer.citations[0].source == "leaflet.txt"
    view = docent.chat.citation(answer.citations[0].chunk_id, None, answer.citations[0].quote)
    assert "20 seconds" in view.text


def test_conversations_start_on_the_default_base_and_store_each_turn(docent, tmp_path):
    drain(docent.documents.ingest([_upload(tmp_path)]))
    info = docent.conversations.create()
    assert info.kb == docent.settings.default_kb
    with pytest.raises(KnowledgeError):
        docent.conversations.create("no-such-base")
    final = list(docent.conversations.send(info.conversation_id, "How long do I wash?"))[-1]
    (turn,) = docent.conversations.turns(info.conversation_id)
    assert turn.status == "done" and turn.answer == final.text
    assert turn.model == docent.serving.chat_model()
    assert not docent.conversations.stop(info.conversation_id)  # nothing being written
    assert [c.conversation_id for c in docent.conversations.list()] == [info.conversation_id]


# --- tasks, datasets, training, serving ------------------------------------------------
def test_tasks_check_their_documents_at_once(docent):
    with pytest.raises(ValueError, match="at least one document"):
        docent.tasks.summarize([])
    with pytest.raises(KnowledgeError):
        docent.tasks.advice(["no-such-doc"])
    with pytest.raises(ValueError, match="1 to 100"):
        docent.tasks.exam_questions(["x"], n=0)


def test_datasets_start_empty_and_generation_needs_documents(docent):
    assert docent.datasets.list() == []
    with pytest.raises(KnowledgeError, match="no documents to generate from"):
        docent.datasets.generate(n=2)


def test_base_models_come_from_finetunes_base_models_smallest_first(docent):
    import finetune.base_models

    models = docent.training.base_models()
    assert sorted(models) == sorted(finetune.base_models.DEFAULT_MODELS) == sorted(DEFAULT_MODELS)
    sizes = [DEFAULT_MODELS[m].size for m in models]
    assert sizes == sorted(sizes) and models[0] == "qwen2.5-coder-0.5b"
    assert docent.training.jobs() == []


def test_serving_offers_the_base_model_until_an_adapter_is_chosen(docent):
    base = docent.settings.llm.model
    assert docent.serving.chat_model() == base
    assert [m.model_id for m in docent.serving.models()] == docent.serving.model_ids() == [base]
    assert docent.serving.llm_for(None) is docent.serving.llm is docent.serving.llm_for(base)
    assert docent.serving.status()["state"] == "ready"  # an injected model is built
    assert docent.serving.use_model(None).model_id == base

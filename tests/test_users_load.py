"""``benchmarks.users_load``'s 20 users and its loss checks, for three seconds over the
real API with accounts and tokens, a scripted LLM and a hash embedder (the benchmark
itself runs the real models for minutes)."""
from __future__ import annotations

import argparse

from fastapi import FastAPI

from assistant.api import build_api
from assistant.core import Assistant
from benchmarks import users_load
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs
from tests.test_api import serve

QUESTIONS = ["When does the pharmacy close on Saturdays?", "Where do visitors register?",
             "How long should I wash my hands?"]


def test_twenty_users_for_three_seconds_lose_nothing(tmp_path):
    settings = make_settings(tmp_path)
    accounts = users_load.make_accounts(settings.paths.data_dir)
    a = Assistant(settings, llm=ScriptedLLM("The pharmacy closes at 9 pm [1]."),
                  embedder=HashEmbedder())
    try:
        docs = make_clinic_docs(tmp_path / "docs")
        a.documents.create_knowledge_base(users_load.KB)
        drain(a.documents.ingest([docs["pdf"]], users_load.KB))
        owned = {name: {a.conversations.create(users_load.KB, "t", owner=name).conversation_id}
                 for name, (kind, _) in accounts.items() if kind == "list"}
        app = FastAPI()
        app.include_router(build_api(a))
        args = argparse.Namespace(minutes=0.05, max_requests=400, timeout=30.0,
                                  ingest_pause=0.5)
        with serve(app) as url:
            calls, _ = users_load.run_users(args, a, url, accounts, QUESTIONS, owned,
                                            [docs["docx"], docs["txt"]])
        listed = {d.doc_id for d in a.documents.list(users_load.KB)}
        problems = users_load.losses(calls, settings.paths.logs_dir / "inference.jsonl",
                                     listed, a.documents.check(every=True))
    finally:
        a.close()
    assert {c.kind for c in calls} == set(users_load.USERS)
    assert {c.user for c in calls} == set(accounts)  # every user made a request
    assert [c for c in calls if c.outcome != "ok"] == []
    assert problems == []
    assert len(calls) <= 400 and all(c.tokens for c in calls if c.kind == "chat")

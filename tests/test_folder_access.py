"""Web sessions stay inside server.allowed_folders: paths are resolved (symlinks, '..')
before the check, symlinked files pointing out are left out, and the CLI is not limited."""
from __future__ import annotations

import pytest

from assistant.core import Assistant
from assistant.services.documents import FolderAccess, FolderNotAllowed
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM


def _tree(tmp_path):
    allowed, secret = tmp_path / "clinic-docs", tmp_path / "private"
    (allowed / "sub").mkdir(parents=True)
    secret.mkdir()
    (allowed / "sub" / "visitors.txt").write_text("Visitors may come from 2 pm to 8 pm.",
                                                  encoding="utf-8")
    (secret / "secret.txt").write_text("The safe code is 4711.", encoding="utf-8")
    (allowed / "sub" / "linked.txt").symlink_to(secret / "secret.txt")
    (allowed / "escape").symlink_to(secret, target_is_directory=True)
    return allowed, secret


def test_the_check_resolves_paths_before_judging(tmp_path):
    allowed, secret = _tree(tmp_path)
    access = FolderAccess.for_server([allowed], loopback=False)
    assert access.check(allowed / "sub") == (allowed / "sub").resolve()
    for outside in (secret, allowed / ".." / "private", allowed / "escape"):
        with pytest.raises(FolderNotAllowed, match="not inside the folders this server may read"):
            access.check(outside)
    with pytest.raises(FolderNotAllowed, match="server.allowed_folders"):
        FolderAccess.for_server([], loopback=False).check(allowed)
    assert FolderAccess.for_server([], loopback=True).check(secret) == secret.resolve()
    # a list applies on loopback too
    with pytest.raises(FolderNotAllowed):
        FolderAccess.for_server([allowed], loopback=True).check(secret)


def test_a_web_sync_reads_only_allowed_files_and_the_cli_is_not_limited(tmp_path):
    allowed, secret = _tree(tmp_path)
    s = make_settings(tmp_path, server={"host": "0.0.0.0", "api_token": "k" * 20,
                                        "allowed_folders": [str(allowed)]})
    a = Assistant(s, llm=ScriptedLLM("x"), embedder=HashEmbedder())
    try:
        with pytest.raises(FolderNotAllowed):
            drain(a.documents.sync_folder(secret, access=a.web_folders))
        report = drain(a.documents.sync_folder(allowed, access=a.web_folders))
        assert [r.source for r in report.results] == ["sub/visitors.txt"]
        assert all("4711" not in h.chunk.text for h in a.chat.search("safe code", top_k=5))
        # the CLI on this machine (no access given) reads what it is pointed at
        drain(a.documents.sync_folder(secret))
        assert "4711" in a.chat.search("safe code", top_k=1)[0].chunk.text
        # and a later web sync does not delete what it left out
        again = drain(a.documents.sync_folder(allowed, access=a.web_folders))
        assert {r.status for r in again.results} == {"unchanged"}
        assert "secret.txt" in {d.source for d in a.documents.list()}
    finally:
        a.close()

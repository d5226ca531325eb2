"""Accounts and roles: the store (salted hashes, tokens, the last admin), the ``users``
CLI, the API's tokens with their owner's rights and conversations, and the page's logins
(the users' page at /, the administration page at /admin/ for admins only)."""
from __future__ import annotations

import io
import os
import stat

import httpx
import pytest

import app as docent_app
from assistant.__main__ import main as cli
from assistant.accounts import AccountError, AccountStore, User
from assistant.core import Assistant
from ingest.pipeline import drain
from assistant.errors import ConversationNotFound
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.test_api import serve

REPLY = "Visiting hours are 9 to 5 [1]."


def test_passwords_are_kept_as_salted_hashes_in_a_private_file(tmp_path):
    store = AccountStore(tmp_path / "accounts.sqlite3")
    assert not store.exists() and not store.path.exists()  # nothing made by asking
    store.add("alice", "same password", "admin")
    store.add("bob", "same password", "user")
    raw = store.path.read_bytes()
    assert b"same password" not in raw
    rows = store._conn().execute("SELECT salt, hash FROM users").fetchall()
    assert rows[0][0] != rows[1][0] and rows[0][1] != rows[1][1]  # salted: hashes differ
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.verify("bob", "same password") == User("bob", "user")
    assert store.verify("bob", "other password") is None
    assert store.verify("nobody", "same password") is None
    store.close()


def test_the_internal_token_is_made_once_when_the_first_requests_arrive_together(tmp_path):
    # twenty API requests at start-up each ask for the app's own token; seen in a load
    # run: one of them failed creating the file another had just made
    from concurrent.futures import ThreadPoolExecutor

    from assistant.services.access import Access

    store = AccountStore(tmp_path / "accounts.sqlite3")
    for attempt in range(8):  # a race: tried several times
        path = tmp_path / f"jobs{attempt}" / ".internal-token"
        apps = [Access(store, "", True, path) for _ in range(4)]  # like several processes
        with ThreadPoolExecutor(16) as pool:
            tokens = list(pool.map(lambda i: apps[i % 4].internal_token(), range(64)))
        assert len(set(tokens)) == 1 and len(tokens[0]) >= 32
        assert path.read_text(encoding="utf-8").strip() == tokens[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == [".internal-token"]  # no leftovers


def test_bad_requests_are_refused_with_what_to_do(tmp_path):
    store = AccountStore(tmp_path / "accounts.sqlite3")
    with pytest.raises(AccountError, match="at least 8"):
        store.add("alice", "short", "admin")
    with pytest.raises(AccountError, match="not a usable account name"):
        store.add("../alice", "long enough", "admin")
    store.add("alice", "long enough", "admin")
    with pytest.raises(AccountError, match="already an account"):
        store.add("alice", "long enough", "user")
    store.add("bob", "long enough", "user")
    with pytest.raises(AccountError, match="last admin"):
        store.remove("alice")
    with pytest.raises(AccountError, match="No account 'carol'"):
        store.new_token("carol")
    store.remove("bob")
    store.remove("alice")  # alone, the last admin may go
    assert not store.exists()
    store.close()


def test_guessing_is_throttled_and_a_new_password_works(tmp_path):
    store = AccountStore(tmp_path / "accounts.sqlite3")
    store.add("alice", "right password", "admin")
    for _ in range(5):
        assert store.verify("alice", "wrong password") is None
    assert store.verify("alice", "right password") is None  # five misses: a pause
    store.set_password("alice", "new password!")
    assert store.verify("alice", "new password!") == User("alice", "admin")
    store.close()


def test_tokens_carry_their_account_and_can_be_revoked(tmp_path):
    store = AccountStore(tmp_path / "accounts.sqlite3")
    store.add("bob", "long enough", "user")
    first, second = store.new_token("bob"), store.new_token("bob")
    assert first != second and len(first) >= 40
    assert first.encode() not in store.path.read_bytes()  # only its digest is kept
    assert store.user_for_token(second) == User("bob", "user")
    assert store.revoke_tokens("bob") == 2
    assert store.user_for_token(first) is None
    store.close()


def run_cli(monkeypatch, capsys, data_dir, *argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli(["--data-dir", str(data_dir), "users", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_users_cli(tmp_path, monkeypatch, capsys):
    code, out = run_cli(monkeypatch, capsys, tmp_path, "list")
    assert code == 0 and "No accounts" in out
    code, out = run_cli(monkeypatch, capsys, tmp_path, "add", "alice", "--password-stdin",
                        stdin="alice's password\n")
    assert code == 0 and "(admin)" in out  # the first account administers
    code, out = run_cli(monkeypatch, capsys, tmp_path, "add", "bob", "--password-stdin",
                        stdin="bob's password\n")
    assert code == 0 and "(user)" in out
    code, out = run_cli(monkeypatch, capsys, tmp_path, "token", "bob")
    token = out.splitlines()[0]
    assert code == 0 and token.startswith("dct_")
    code, out = run_cli(monkeypatch, capsys, tmp_path, "list")
    assert "alice\tadmin\t0 token(s)" in out and "bob\tuser\t1 token(s)" in out
    code, out = run_cli(monkeypatch, capsys, tmp_path, "passwd", "bob", "--password-stdin",
                        stdin="a new password\n")
    assert code == 0
    code, out = run_cli(monkeypatch, capsys, tmp_path, "remove", "alice")
    assert code == 2 and "last admin" in out
    code, out = run_cli(monkeypatch, capsys, tmp_path, "add", "carol")  # no terminal
    assert code == 2 and "--password-stdin" in out
    store = AccountStore(tmp_path / "accounts.sqlite3")
    assert store.verify("bob", "a new password") == User("bob", "user")
    assert store.user_for_token(token) == User("bob", "user")
    store.close()


@pytest.fixture()
def clinic(tmp_path):
    """An Assistant with two accounts made before it starts: alice (admin), bob (user)."""
    store = AccountStore(tmp_path / "data" / "accounts.sqlite3")
    store.add("alice", "alice's password", "admin")
    store.add("bob", "bob's password", "user")
    tokens = {"alice": store.new_token("alice"), "bob": store.new_token("bob")}
    store.close()
    a = Assistant(make_settings(tmp_path, server={"api_token": "server-token-0123456789"}),
                  llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    (tmp_path / "hours.txt").write_text("Visiting hours are from 9 to 5 every day.")
    drain(a.documents.ingest([tmp_path / "hours.txt"]))
    yield a, tokens
    a.close()


def test_each_account_sees_only_its_own_conversations(clinic):
    a, _ = clinic
    alices = a.conversations.create(owner="alice")
    list(a.conversations.send(alices.conversation_id, "When can I visit?", owner="alice"))
    assert [c.conversation_id for c in a.conversations.list("alice")] == [alices.conversation_id]
    assert a.conversations.list("bob") == []
    for call in (lambda: a.conversations.turns(alices.conversation_id, "bob"),
                 lambda: a.conversations.delete(alices.conversation_id, "bob"),
                 lambda: a.conversations.export(alices.conversation_id, "bob"),
                 lambda: list(a.conversations.send(alices.conversation_id, "hi", owner="bob"))):
        with pytest.raises(ConversationNotFound):
            call()
    assert a.conversations.stop(alices.conversation_id, "bob") is False
    assert len(a.conversations.turns(alices.conversation_id, "alice")) == 1
    (entry,) = a.inference_log.entries()
    assert entry["user"] == "alice"


def test_the_api_needs_a_token_and_answers_as_its_account(clinic):
    a, tokens = clinic
    bobs = a.conversations.create(owner="bob", title="bob's visit")
    with serve(docent_app.build_app(a)) as url:
        def get(path, token=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.get(url + path, headers=headers, timeout=30)

        assert get("/v1/models").status_code == 401  # accounts exist: loopback needs a token
        assert get("/v1/models", "dct_not-a-token").status_code == 401
        assert get("/v1/models", tokens["bob"]).status_code == 200
        listed = get("/v1/conversations", tokens["bob"]).json()["data"]
        assert [c["id"] for c in listed] == [bobs.conversation_id]
        assert get("/v1/conversations", tokens["alice"]).json()["data"] == []
        reply = httpx.post(url + "/v1/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {tokens['alice']}"},
                           json={"messages": [{"role": "user", "content": "Visiting hours?"}]})
        assert reply.status_code == 200
        assert get("/v1/models", "server-token-0123456789").status_code == 200
    assert a.inference_log.entries()[-1]["user"] == "alice"


def login(client: httpx.Client, base: str, name: str, password: str) -> bool:
    reply = client.post(base + "/login", data={"username": name, "password": password})
    return reply.status_code == 200 and reply.json().get("success") is True


def tab_labels(client: httpx.Client, base: str) -> set[str]:
    config = client.get(base + "/config").json()
    return {c["props"].get("label") for c in config["components"]
            if c.get("type") in ("tab", "tabitem")}


def test_the_page_asks_for_a_login_and_admins_alone_get_the_administration(clinic):
    a, _ = clinic
    with serve(docent_app.build_app(a)) as url:
        with httpx.Client(timeout=30) as anyone:
            assert anyone.get(url + "/config").status_code == 401
        with httpx.Client(timeout=30) as bob:
            assert not login(bob, url, "bob", "wrong password")
            assert login(bob, url, "bob", "bob's password")
            labels = tab_labels(bob, url)
            assert "Chat" in labels and "Knowledge" not in labels and "Fine-tune" not in labels
            assert not login(bob, url + "/admin", "bob", "bob's password")  # not an admin
            assert bob.get(url + "/admin/config").status_code == 401
        with httpx.Client(timeout=30) as alice:
            assert login(alice, url + "/admin", "alice", "alice's password")
            assert {"Chat", "Knowledge", "Fine-tune"} <= tab_labels(alice, url + "/admin")


def test_beyond_loopback_accounts_stand_in_for_the_token(tmp_path):
    from assistant.settings import ServerSettings

    wide = ServerSettings(host="0.0.0.0")
    assert "needs an API token" in docent_app._token_problem(wide, accounts=False)
    assert docent_app._token_problem(wide, accounts=True) == ""
    short = ServerSettings(host="0.0.0.0", api_token="short")
    assert "at least 16" in docent_app._token_problem(short, accounts=True)


def test_a_question_asked_on_the_page_belongs_to_the_account_logged_in(clinic):
    from gradio_client import Client

    a, _ = clinic
    with serve(docent_app.build_app(a)) as url:
        client = Client(url + "/", auth=("bob", "bob's password"), verbose=False)
        history, _, _ = client.predict("When can I visit?", [], "default", api_name="/chat")
        assert history[-1]["role"] == "assistant" and history[-1]["content"]
    (bobs,) = a.conversations.list("bob")
    assert bobs.turns == 1 and a.conversations.list("alice") == []
    assert a.inference_log.entries()[-1]["user"] == "bob"


def test_admins_manage_accounts_on_the_page(tmp_path):
    from assistant.ui.accounts_panel import act

    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    try:
        mine = a.conversations.create(title="before accounts")
        table, message, cleared = act(a, "add", "dr.lan", "a long password", "user")
        assert "(admin)" in message and "1 conversation" in message and cleared == ""
        assert [c.conversation_id for c in a.conversations.list("dr.lan")] == [mine.conversation_id]
        table, message, _ = act(a, "add", "mai", "short", "user")
        assert message.startswith("⚠️") and "at least 8" in message
        act(a, "add", "mai", "mai's password", "user")
        _, message, _ = act(a, "token", "mai")
        token = message.split("`")[1]
        assert a.access.by_token(token).name == "mai"
        table, message, _ = act(a, "remove", "dr.lan")
        assert "last admin" in message
        assert [row[:2] for row in table] == [["dr.lan", "admin"], ["mai", "user"]]
    finally:
        a.close()

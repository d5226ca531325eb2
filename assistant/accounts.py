"""Accounts: who may use a shared Docent, with which rights.

One SQLite file, ``<data_dir>/accounts.sqlite3`` (mode 0600). A password is kept only
as a salted scrypt hash (hashlib, the standard library); an API token only as its
SHA-256 (a token is 256 random bits, so a fast hash is enough) and is shown once, when
it is made. Two roles: an *admin* manages knowledge bases, folder sync, training and
deletion; a *user* asks, reads sources and sees only their own conversations.

With no account at all, a person alone on loopback keeps the page without a login
(``LOCAL``: the machine's own admin, who owns the conversations made that way).

>>> import tempfile, pathlib
>>> store = AccountStore(pathlib.Path(tempfile.mkdtemp()) / "accounts.sqlite3")
>>> store.add("dr.lan", "a long passphrase", "admin").role
'admin'
>>> store.verify("dr.lan", "a long passphrase"), store.verify("dr.lan", "wrong")
(User(name='dr.lan', role='admin'), None)
>>> token = store.new_token("dr.lan")
>>> store.user_for_token(token).name, store.user_for_token("nope")
('dr.lan', None)
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from assistant.errors import AssistantError

ROLES = ("admin", "user")
MIN_PASSWORD = 8
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# scrypt's cost: about 50 ms and 16 MB per check, which slows guessing without slowing a login
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 2**20, "dklen": 32}
FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    salt BLOB NOT NULL, hash BLOB NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created_at TEXT NOT NULL);
"""


class AccountError(AssistantError):
    """A bad account request: an unknown or taken name, a short password, the last admin."""


@dataclass(frozen=True)
class User:
    name: str  # "" for LOCAL
    role: str  # one of ROLES

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"A role is one of {', '.join(ROLES)}, not {self.role!r}.")

    @property
    def admin(self) -> bool:
        return self.role == "admin"


LOCAL = User("", "admin")  # the person at this machine when no account exists


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_at: str
    tokens: int


class AccountStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._failures: dict[str, list[float]] = {}  # name -> times of recent bad passwords

    def _conn(self) -> sqlite3.Connection:
        """The file is created only when the first account is added (``exists`` reads
        nothing then), with no permissions for group and others."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                       isolation_level=None)
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(FORMAT),))
            found = int(self._db.execute("SELECT value FROM meta WHERE key='format'").fetchone()[0])
            if found > FORMAT:
                raise AccountError(f"{self.path} was written by a newer Docent (accounts "
                                   f"format v{found}): update Docent.")
        return self._db

    def exists(self) -> bool:
        """Whether any account exists (then every page and API call needs a login)."""
        if self._db is None and not self.path.is_file():
            return False
        with self._lock:
            return self._conn().execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    # --- managing accounts (the CLI on this machine) ---------------------------------
    def add(self, name: str, password: str, role: str) -> User:
        user = User(_valid_name(name), role)
        salt, digest = _hash_password(_valid_password(password))
        with self._lock:
            try:
                self._conn().execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", (
                    user.name, role, salt, digest, _params(), _now()))
            except sqlite3.IntegrityError:
                raise AccountError(f"There is already an account {name!r}; change its "
                                   f"password with `users passwd {name}`.") from None
        return user

    def list(self) -> list[Account]:
        if not self.path.is_file():
            return []
        with self._lock:
            rows = self._conn().execute(
                "SELECT u.name, u.role, u.created_at, (SELECT COUNT(*) FROM tokens t "
                "WHERE t.user = u.name) FROM users u ORDER BY u.name").fetchall()
        return [Account(*row) for row in rows]

    def remove(self, name: str) -> None:
        """Delete ``name`` and its tokens. The last admin stays while other accounts need
        one to manage the server."""
        with self._lock, self._conn() as db:
            db.execute("BEGIN IMMEDIATE")
            role = self._role(db, name)
            admins = db.execute("SELECT COUNT(*) FROM users WHERE role='admin'").fetchone()[0]
            others = db.execute("SELECT COUNT(*) FROM users WHERE name != ?", (name,)).fetchone()[0]
            if role == "admin" and admins == 1 and others:
                raise AccountError(f"{name!r} is the last admin: make another admin first "
                                   "(`users add NAME --role admin`), then remove this one.")
            db.execute("DELETE FROM users WHERE name = ?", (name,))

    def set_password(self, name: str, password: str) -> None:
        salt, digest = _hash_password(_valid_password(password))
        with self._lock:
            self._role(self._conn(), name)
            self._conn().execute("UPDATE users SET salt=?, hash=?, params=? WHERE name=?",
                                 (salt, digest, _params(), name))
        self._failures.pop(name, None)

    def new_token(self, name: str) -> str:
        """A new API token for ``name`` with the same rights; only its digest is kept."""
        token = "dct_" + secrets.token_urlsafe(32)
        with self._lock:
            self._role(self._conn(), name)
            self._conn().execute("INSERT INTO tokens VALUES (?, ?, ?)",
                                 (_token_digest(token), name, _now()))
        return token

    def revoke_tokens(self, name: str) -> int:
        with self._lock:
            self._role(self._conn(), name)
            return self._conn().execute("DELETE FROM tokens WHERE user = ?", (name,)).rowcount

    # --- checking who is asking -------------------------------------------------------
    def verify(self, name: str, password: str) -> User | None:
        """The account when ``password`` is right; None otherwise, and always None for a
        name that failed 5 times in the last minute (guessing gets slow)."""
        if self._throttled(name):
            return None
        row = None
        if self.path.is_file():
            with self._lock:
                row = self._conn().execute("SELECT role, salt, hash, params FROM users "
                                           "WHERE name = ?", (name,)).fetchone()
        given = (password or "").encode()
        if row is None:
            _hash_password(given.decode(errors="replace") or "x")  # the same time either way
            self._failed(name)
            return None
        role, salt, digest, params = row
        if not hmac.compare_digest(_scrypt(given, salt, params), digest):
            self._failed(name)
            return None
        self._failures.pop(name, None)
        return User(name, role)

    def user_for_token(self, token: str) -> User | None:
        if not token or not self.path.is_file():
            return None
        with self._lock:
            row = self._conn().execute(
                "SELECT u.name, u.role FROM tokens t JOIN users u ON u.name = t.user "
                "WHERE t.digest = ?", (_token_digest(token),)).fetchone()
        return None if row is None else User(*row)

    def _role(self, db: sqlite3.Connection, name: str) -> str:
        row = db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise AccountError(f"No account {name!r}; `users list` shows them.")
        return row[0]

    def _throttled(self, name: str, limit: int = 5, window: float = 60.0) -> bool:
        now = time.monotonic()
        recent = [t for t in self._failures.get(name, []) if now - t < window]
        self._failures[name] = recent
        return len(recent) >= limit

    def _failed(self, name: str) -> None:
        self._failures.setdefault(name, []).append(time.monotonic())

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _valid_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise AccountError(f"{name!r} is not a usable account name: 1-64 letters, digits and "
                           "'.', '_', '@', '-', starting with a letter or digit.")
    return name


def _valid_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise AccountError(f"A password needs at least {MIN_PASSWORD} characters.")
    return password


def _params() -> str:
    return f"scrypt:{_SCRYPT['n']}:{_SCRYPT['r']}:{_SCRYPT['p']}"


def _scrypt(password: bytes, salt: bytes, params: str) -> bytes:
    _, n, r, p = params.split(":")
    return hashlib.scrypt(password, salt=salt, n=int(n), r=int(r), p=int(p),
                          maxmem=_SCRYPT["maxmem"], dklen=_SCRYPT["dklen"])


def _hash_password(password: str) -> tuple[bytes, bytes]:
    salt = secrets.token_bytes(16)
    return salt, _scrypt(password.encode(), salt, _params())


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_account(store: AccountStore, conversations: Path, name: str, password: str,
                role: str | None = None) -> tuple[User, int]:
    """Make an account (the CLI's ``users add`` and the administration page): the first
    one is an admin unless ``role`` says otherwise, and the conversations made before
    accounts existed (``conversations``: their SQLite file) become its own. Returns the
    account and how many conversations it adopted."""
    from assistant.conversations import ConversationStore

    first = not store.exists()
    user = store.add(name, password, role or ("admin" if first else "user"))
    if not first:
        return user, 0
    kept = ConversationStore(conversations)
    try:
        return user, kept.adopt(user.name)
    finally:
        kept.close()

"""Who is asking: the page's login and the API's bearer token, checked against the
accounts (``assistant.accounts``) and the server's own ``server.api_token``.

Without accounts everything stays as it was: on loopback no login (the person at the
machine is ``LOCAL``), beyond it the server's token as the one password. Once an account
exists, the page and the API need an account's password or token; the server's token
still works for the API, as the machine's own admin (for scripts on the server)."""
from __future__ import annotations

import os
import secrets
import tempfile
import threading
from pathlib import Path

from assistant.accounts import LOCAL, AccountStore, User


class Access:
    def __init__(self, accounts: AccountStore, api_token: str, loopback: bool,
                 internal_token_file: Path | None = None):
        self.accounts = accounts
        self._api_token, self._loopback = api_token, loopback
        self._internal_file = internal_token_file
        self._internal = ""
        self._lock = threading.Lock()  # the first API requests arrive together

    def internal_token(self) -> str:
        """The token this app's own workers call its API with (the machine's admin):
        random, made once, kept readable by this user only, so a job resumed after a
        restart still gets in."""
        with self._lock:
            if not self._internal and self._internal_file is not None:
                self._internal = _read_or_make_token(self._internal_file)
            return self._internal

    def login_required(self) -> bool:
        """Whether the page asks for a login (decided when the app starts)."""
        return self.accounts.exists() or not self._loopback

    def by_token(self, token: str) -> User | None:
        """The caller of an API request with bearer ``token`` ("" when none was sent);
        None: refused."""
        accounts = self.accounts.exists()
        if not accounts and not self._api_token:
            return LOCAL  # nothing to check (the app refuses to start so beyond loopback)
        for own in (self._api_token, self.internal_token()):
            if own and secrets.compare_digest(token.encode(), own.encode()):
                return LOCAL
        return self.accounts.user_for_token(token) if accounts and token else None

    def by_password(self, name: str, password: str, admin: bool = False) -> User | None:
        """The page's login: an account and its password, or, with no account, the
        server's token as password (any name). ``admin``: only an admin gets in."""
        if self.accounts.exists():
            user = self.accounts.verify(name, password)
        else:
            ok = bool(self._api_token) and secrets.compare_digest(
                password.encode(), self._api_token.encode())
            user = LOCAL if ok else None
        return user if user is not None and (user.admin or not admin) else None

    def owner(self, login: str | None) -> str:
        """Whose conversations a page logged in as ``login`` sees: that account's, or
        LOCAL's ("") when no account exists (any name typed with the server's token)."""
        return login if login and self.accounts.exists() else ""

    def is_admin(self, name: str) -> bool:
        return any(a.name == name and a.role == "admin" for a in self.accounts.list())


def _read_or_make_token(path: Path) -> str:
    """The token in ``path``, made first if there is none. The file appears whole (a
    complete temporary file linked into place), so another process making it at the
    same moment never reads it half-written; whichever link comes first is kept."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # made meanwhile by another process: use that one
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="utf-8").strip()

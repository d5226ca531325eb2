"""Where the passage vectors live: Chroma embedded in this process, or a Chroma server.

``VectorStoreConfig`` says which and ``open_client`` opens it. Embedded, the collections
live under the knowledge directory with the names their manifests give them. A server
may be shared by several installations, so there every name gets the installation's
prefix: the manifest's ``kb_<16 hex digits>`` becomes ``docent_kb_<16 hex digits>``, one
per knowledge base, unchanged by a rename. Either way the catalog stays the record of
truth: what the vector store lacks, ``kb check --repair`` embeds again from it.

>>> VectorStoreConfig("http://127.0.0.1:8000").collection("kb_0123456789abcdef")
'docent_kb_0123456789abcdef'
>>> VectorStoreConfig().collection("kb_0123456789abcdef")
'kb_0123456789abcdef'
>>> VectorStoreConfig("https://chroma.example.org").address
('chroma.example.org', 443, True)
"""
from __future__ import annotations

import functools
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from knowledge.errors import KnowledgeError

log = logging.getLogger(__name__)

PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")  # then "_kb_" and 16 hex: <= 52


class VectorStoreUnreachable(KnowledgeError):
    """The Chroma server named by ``vector_store.url`` does not answer."""


@dataclass(frozen=True)
class VectorStoreConfig:
    url: str = ""  # a Chroma server, e.g. http://127.0.0.1:8000; empty: embedded
    collection_prefix: str = "docent"  # start of every collection name on a server
    connect_timeout_s: float = 5.0  # to reach the server
    timeout_s: float = 120.0  # for any one request (a large upsert included)

    def __post_init__(self):
        if not PREFIX.match(self.collection_prefix):
            raise KnowledgeError(
                f"vector_store.collection_prefix {self.collection_prefix!r}: use 1-32 letters, "
                "digits, '-' or '_', starting with a letter or digit.")
        if self.url:
            parts = urlsplit(self.url)
            if (parts.scheme not in ("http", "https") or not parts.hostname
                    or parts.path.strip("/") or parts.query):
                raise KnowledgeError(
                    f"vector_store.url {self.url!r} is not a Chroma server address: write it "
                    "as http://HOST:PORT or https://HOST:PORT.")

    @property
    def server(self) -> bool:
        return bool(self.url)

    @property
    def address(self) -> tuple[str, int, bool]:
        """``(host, port, ssl)`` of the server."""
        parts = urlsplit(self.url)
        ssl = parts.scheme == "https"
        return parts.hostname, parts.port or (443 if ssl else 80), ssl

    def collection(self, name: str) -> str:
        """The Chroma name of the collection a manifest calls ``name``."""
        return f"{self.collection_prefix}_{name}" if self.server else name

    def describe(self, root: Path) -> str:
        return (f"Chroma server at {self.url} (collections {self.collection_prefix}_*)"
                if self.server else f"embedded Chroma under {root / 'chroma'}")


def open_client(config: VectorStoreConfig, path: Path):
    """A Chroma client: embedded under ``path``, or for the server ``config`` names (which
    must answer now: else ``VectorStoreUnreachable`` says what to do)."""
    if not config.server:
        return _embedded(path)
    heartbeat(config)
    return ServerClient(_http_client(config), config)


def heartbeat(config: VectorStoreConfig) -> str:
    """The server's version if it answers within the connect timeout."""
    import httpx

    try:
        got = httpx.get(config.url.rstrip("/") + "/api/v2/version",
                        timeout=httpx.Timeout(config.connect_timeout_s))
        got.raise_for_status()
        return str(got.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise _unreachable(config, exc) from exc


def close_client(client) -> None:
    """Release ``client``; an embedded one drops chromadb's cache of its files, so a later
    client reads the disk again."""
    if isinstance(client, ServerClient):
        client.close()
        return
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


class ServerClient:
    """A Chroma server seen through this installation's names: the part of the client API
    the knowledge bases use, each collection name given the prefix on its way. A server
    that stops answering raises ``VectorStoreUnreachable``, here and from the collections."""

    def __init__(self, client, config: VectorStoreConfig):
        self._client, self.config = client, config

    def get_or_create_collection(self, name: str, **kwargs):
        with answering(self.config):
            found = self._client.get_or_create_collection(self.config.collection(name), **kwargs)
        return _Guarded(found, self.config)

    def delete_collection(self, name: str) -> None:
        with answering(self.config):
            self._client.delete_collection(self.config.collection(name))

    def heartbeat(self) -> int:
        with answering(self.config):
            return self._client.heartbeat()

    def close(self) -> None:
        self._client.close()


class _Guarded:
    """A server collection whose calls raise ``VectorStoreUnreachable`` when the server
    stops answering (attributes such as ``name`` pass through)."""

    def __init__(self, collection, config: VectorStoreConfig):
        self._collection, self._config = collection, config

    def __getattr__(self, name: str):
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with answering(self._config):
                return attr(*args, **kwargs)
        return call


@contextmanager
def answering(config: VectorStoreConfig):
    """Turn a server that stopped answering (refused, reset, timed out) into a
    ``VectorStoreUnreachable`` that says what to do."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise VectorStoreUnreachable(
            f"The Chroma server at {config.url} stopped answering ({type(exc).__name__}: "
            f"{exc}). The catalog keeps every passage, and a document left half-stored is "
            "undone when Docent starts again: start the server again, then retry.") from exc


def _embedded(path: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))


def _http_client(config: VectorStoreConfig):
    import chromadb
    import httpx
    from chromadb.config import Settings as ChromaSettings

    host, port, ssl = config.address
    try:
        client = chromadb.HttpClient(host=host, port=port, ssl=ssl,
                                     settings=ChromaSettings(anonymized_telemetry=False))
    except Exception as exc:  # noqa: BLE001 - chromadb raises ValueError or its own errors
        raise _unreachable(config, exc) from exc
    # chromadb's HTTP session waits forever by default: a hung server would hang a request
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
    else:
        log.warning("Could not set timeouts on chromadb's HTTP session; requests to %s may "
                    "wait for as long as the server takes", config.url)
    return client


def _unreachable(config: VectorStoreConfig, exc: Exception) -> VectorStoreUnreachable:
    host, port, _ = config.address
    return VectorStoreUnreachable(
        f"The Chroma server at {config.url} does not answer ({type(exc).__name__}: {exc}). "
        f"Start it (for example `chroma run --path /path/to/chroma-data --host {host} "
        f"--port {port}`), or unset vector_store.url (DOCENT_VECTOR_STORE__URL) to keep the "
        "vectors in the embedded store under the data dir.")

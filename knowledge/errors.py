"""Domain errors of the knowledge layer; edges (UI, CLI, HTTP) turn them into messages."""
from common.errors import DocentError


class KnowledgeError(DocentError):
    """Base class."""


class KnowledgeBaseNotFound(KnowledgeError):
    pass


class IndexMismatch(KnowledgeError):
    """The index on disk was built with other settings (embedder, format)."""


class EmbedderNotFound(KnowledgeError):
    pass

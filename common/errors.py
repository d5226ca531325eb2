"""The one error root. Every domain error derives from ``DocentError``, and its message
says what to do; each edge (web page, CLI, HTTP API) catches this root once and shows
the message."""


class DocentError(Exception):
    """Base class of every error Docent reports to a person."""


class ModelNotFound(DocentError):
    """A configured model file or package is missing; the message says how to fix it."""


class ModelChecksumError(DocentError):
    """A model assembled from packages does not have the pinned sha256."""

"""Errors of ingestion."""
from common.errors import DocentError


class IngestError(DocentError):
    """A file could not be ingested; the message says why and what to do."""

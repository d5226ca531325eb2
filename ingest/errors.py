class IngestError(Exception):
    """A file could not be ingested; the message says why and what to do."""

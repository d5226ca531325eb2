"""Domain errors of the assistant; the UI, CLI and HTTP edges turn them into messages."""


class AssistantError(Exception):
    """Base class."""


class ModelNotFound(AssistantError):
    """A configured model file or package is missing; the message says how to fix it."""


class ModelChecksumError(AssistantError):
    pass


class ConversationNotFound(AssistantError):
    """No stored conversation has the given id."""


class BackendUnavailable(AssistantError):
    """The remote LLM server cannot be reached or refused the request; the message names
    its URL."""

"""Errors of the assistant's services (chat, conversations, model backends)."""
from common.errors import DocentError


class AssistantError(DocentError):
    """Base class of the services' errors."""


class ConversationNotFound(AssistantError):
    """No stored conversation has the given id."""


class BackendUnavailable(AssistantError):
    """The remote LLM server cannot be reached or refused the request; the message names
    its URL."""

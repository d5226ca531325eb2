"""Stored conversations: each question is stored before the model is called, its answer
(or its failure, or what was streamed before a stop) after."""
from __future__ import annotations

import logging
import threading

from assistant.errors import ConversationNotFound
from assistant.conversations import (ConversationInfo, ConversationStore, Turn,
                                     history_for_prompt)
from common.errors import DocentError
from assistant.services.bases import KnowledgeBases
from assistant.services.chat import Chat, Stream
from assistant.services.serving import Serving
from assistant.types import Answer, AnswerDelta

log = logging.getLogger(__name__)


class Conversations:
    def __init__(self, store: ConversationStore, bases: KnowledgeBases, chat: Chat,
                 serving: Serving, n_ctx: int):
        self.store = store
        self._bases, self._chat, self._serving = bases, chat, serving
        self._history_budget = n_ctx // 4  # tokens of earlier turns a question carries
        self._stops: dict[str, threading.Event] = {}  # conversation id -> stop asked
        left = store.recover_pending(
            "Docent stopped before this answer was finished; ask again (Retry).")
        if left:
            log.warning("%d question(s) left unanswered by the last run are marked failed", left)

    # ``owner``: the account asking (its name; "" without accounts). A conversation of
    # another owner is "not found" to it. None (the CLI on this machine): any conversation.
    def create(self, kb: str | None = None, title: str = "",
               owner: str = "") -> ConversationInfo:
        """Start a stored conversation over ``kb`` (several names: separated by commas)."""
        kb = self._bases.name(kb)
        for name in _kb_names(kb):
            self._bases.library.manifest(name)  # an unknown knowledge base is refused now
        return self.store.create(kb, title, owner)

    def list(self, owner: str | None = None) -> list[ConversationInfo]:
        return self.store.list(owner)

    def get(self, cid: str, owner: str | None = None) -> ConversationInfo:
        info = self.store.get(cid)
        if owner is not None and info.owner != owner:
            raise ConversationNotFound(f"No conversation with id {cid!r}.")
        return info

    def turns(self, cid: str, owner: str | None = None) -> list[Turn]:
        self.get(cid, owner)
        return self.store.turns(cid)

    def rename(self, cid: str, title: str, owner: str | None = None) -> ConversationInfo:
        self.get(cid, owner)
        return self.store.rename(cid, title)

    def delete(self, cid: str, owner: str | None = None) -> None:
        self.get(cid, owner)
        self.store.delete(cid)

    def export(self, cid: str, owner: str | None = None) -> str:
        """The conversation as Markdown, each answer followed by its citations."""
        self.get(cid, owner)
        return self.store.export_markdown(cid)

    def send(self, cid: str, question: str, model: str | None = None,
             owner: str | None = None) -> Stream:
        """``Chat.ask`` within stored conversation ``cid``: its earlier answered turns
        (trimmed to a quarter of the context) are the history. The question is stored
        before the model is called; the final ``Answer`` fills it before it is yielded; a
        failure stores it as failed with the reason (then re-raises), and ``stop`` or
        closing the stream stores what was streamed as stopped. Unknown ``cid``: raised
        now. ``model``: the base model or an adapter for this turn."""
        info = self.get(cid, owner)
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        return self._send(info, question, model)

    def retry(self, cid: str, model: str | None = None, owner: str | None = None) -> Stream:
        """Ask the last question of ``cid`` again when its answer failed or was stopped
        (the failed turn is replaced)."""
        self.get(cid, owner)
        failed = self.store.last_failed(cid)
        if failed is None:
            raise ValueError("The last answer of this conversation was neither failed nor "
                             "stopped: nothing to retry.")
        self.store.remove_turn(failed.turn_id)
        return self.send(cid, failed.question, model, owner)

    def stop(self, cid: str, owner: str | None = None) -> bool:
        """Stop the answer being written in ``cid`` (what was streamed is kept, marked
        stopped, and the model's slot is freed); False when none is being written."""
        event = self._stops.get(cid)
        if event is None or (owner is not None and self.store.get(cid).owner != owner):
            return False
        event.set()
        return True

    def _send(self, info: ConversationInfo, question: str, model: str | None) -> Stream:
        cid = info.conversation_id
        turns = self.store.turns(cid)
        turn_id = self.store.begin(cid, question, model or self._serving.chat_model())
        stop = self._stops[cid] = threading.Event()
        streamed: list[str] = []
        finished = False
        try:
            history = history_for_prompt(turns, self._history_budget,
                                         self._serving.llm.count_tokens)
            events = self._chat.ask(question, _kb_names(info.kb), history, model,
                                user=info.owner)
            try:
                for event in events:
                    if stop.is_set():
                        break
                    if isinstance(event, AnswerDelta):
                        streamed.append(event.text)
                    elif isinstance(event, Answer):
                        self.store.finish(turn_id, event)
                        finished = True
                    yield event
            finally:
                events.close()  # frees the model's slot now, not when collected
            if not finished:
                self.store.stop(turn_id, "".join(streamed))
                finished = True
        except GeneratorExit:
            if not finished:
                self.store.stop(turn_id, "".join(streamed))
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, (DocentError, ValueError)) else (
                f"{type(exc).__name__}: {exc}")
            self.store.fail(turn_id, reason, "".join(streamed))
            raise
        finally:
            if self._stops.get(cid) is stop:
                del self._stops[cid]

    def close(self) -> None:
        self.store.close()


def _kb_names(kb: str) -> list[str]:
    """
    >>> _kb_names("clinic, leaflets")
    ['clinic', 'leaflets']
    """
    return [k.strip() for k in kb.split(",") if k.strip()]

"""OpenAI-compatible HTTP API over the ``Assistant`` facade, served beside the web app.

``build_api(assistant)`` returns a FastAPI router for ``/v1``:

* ``GET /v1/models``: OpenAI's list shape; the base chat model (``Serving.model_ids``).
* ``POST /v1/chat/completions``: the usual request (``model``, ``messages``, ``stream``,
  ``temperature``, ``max_tokens``; other standard fields are accepted and ignored) and
  two extra fields:

  - ``knowledge_base``: a name, or a list of names searched together; default: the
    ``default_kb`` setting.
  - ``rag``: ``true`` (default): answer from the knowledge base. The last user message
    is the question; each earlier user message and the assistant reply after it are
    the history (a follow-up is rewritten into a standalone search query). System
    messages, ``temperature`` and ``max_tokens`` are ignored: Docent's prompt and the
    ``llm`` settings apply. ``false``: plain chat with the model, messages as given,
    no retrieval and no sources (``max_tokens`` capped at ``llm.max_tokens``).

  The text keeps its ``[n]`` markers. An extra top-level field ``sources`` (on the last
  chunk when streaming) lists the sources given to the model, cited ones first:
  ``{"number", "source", "page", "quote", "chunk_id", "knowledge_base", "cited",
  "inferred", "documents"}``; ``number`` matches ``[n]``; ``quote`` is the supporting
  sentence of a cited source and the start of the passage otherwise; ``documents``:
  every document holding that passage (identical passages are stored once). Beside it,
  ``refused`` ("" for an answer, else why it is a refusal: ``no_evidence``,
  ``out_of_scope``, ``unsupported``) and ``notices`` (the lines Docent added to the
  model's text, such as the medical disclaimer).

With the official client::

    client = openai.OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="TOKEN")
    r = client.chat.completions.create(model="qwen2.5-coder-1.5b", messages=[...],
                                       extra_body={"knowledge_base": "clinic"})
    r.choices[0].message.content, r.model_extra["sources"]

``GET /v1/conversations``: the caller's own stored conversations (id, title, knowledge
base, times, number of turns), most recent first.

Auth: once an account exists (``python -m assistant users``), or when
``server.api_token`` is set, every request needs ``Authorization: Bearer <token>``: an
account's token (``users token NAME``), with that account's rights and conversations, or
the server's token (the machine's own admin). Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:
400 bad request, 401 token, 404 unknown model or knowledge base, 429 more than
``server.max_queued_requests`` chat completions at once (with ``Retry-After``), 502 the
model server unreachable or crashed mid-answer, 500 anything else (logged). An error
after streaming began is sent as a last ``data: {"error": ...}`` event.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from common.errors import DocentError
from assistant.accounts import LOCAL, User
from assistant.conversations import ConversationInfo
from assistant.core import Assistant
from assistant.errors import BackendUnavailable
from assistant.types import Answer, AnswerDelta
from knowledge.errors import KnowledgeBaseNotFound, KnowledgeError

log = logging.getLogger(__name__)

QUOTE_CHARS = 300  # the start of an uncited source's passage given as its quote
_END = object()


# --- request ------------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str = Field(description="'system', 'user' or 'assistant' (others are ignored).")
    content: str | list[dict[str, Any]] | None = Field(
        None, description="Text, or content parts of which the 'text' ones are read.")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(None, description="A model id from /v1/models; default: the base.")
    messages: list[ChatMessage] = Field(default_factory=list, description="The conversation.")
    stream: bool = Field(False, description="Server-sent chat.completion.chunk events.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Plain chat only.")
    max_tokens: int | None = Field(None, ge=1, description="Plain chat only.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens.")
    knowledge_base: str | list[str] | None = Field(
        None, description="Docent: knowledge base name(s) to answer from.")
    rag: bool = Field(True, description="Docent: false for plain chat without retrieval.")


# --- errors -------------------------------------------------------------------
class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, code: str,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": None,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class BodyLimit:
    """ASGI middleware: a request under ``prefix`` whose body is over ``limit`` bytes is
    answered 413 before it is read in full. A declared Content-Length is judged at once;
    a body without one (chunked) is read up to the limit, then refused or passed on."""

    def __init__(self, app, limit: int, prefix: str = "/v1"):
        self.app, self.limit, self.prefix = app, limit, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:  # no length given: hold what arrives, up to the limit
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        mb = self.limit / 2**20
        error = APIError(413, f"The request body is over {mb:g} MB (server.max_request_mb): "
                              "send a shorter one.", "request_too_large")
        await error.response()(scope, receive, send)


def api_error(exc: Exception) -> APIError:
    """The HTTP error for a domain error (the one place they become messages here)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, KnowledgeBaseNotFound):
        return APIError(404, str(exc), "knowledge_base_not_found")
    if isinstance(exc, BackendUnavailable):
        log.warning("API request failed: %s", exc)
        return APIError(502, str(exc), "backend_unavailable", "api_error")
    if isinstance(exc, (KnowledgeError, ValueError)):
        return APIError(400, str(exc), "invalid_request")
    if isinstance(exc, DocentError):
        log.warning("API request failed: %s", exc)
        return APIError(500, str(exc), "assistant_error", "api_error")
    log.error("API request failed", exc_info=exc)
    return APIError(500, "Internal error; the server log has the details.", "internal_error",
                    "api_error")


class _OpenAIRoute(APIRoute):
    """Answers every failure of a /v1 route, validation included, in OpenAI's shape."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                                  for e in exc.errors())
                return APIError(400, f"Invalid request: {where}", "invalid_request").response()
            except Exception as exc:  # noqa: BLE001 - the edge: errors become OpenAI-style replies
                return api_error(exc).response()

        return route


def _auth(access: Access):
    """Who is calling (``request.state.user``): an account's token, the server's own
    token, or LOCAL when neither accounts nor a token are set."""
    async def check(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        token = given.strip() if scheme.lower() == "bearer" else ""
        user = await run_in_threadpool(access.by_token, token)
        if user is None:
            raise APIError(401, "Missing or wrong API token: send 'Authorization: Bearer "
                           "<token>' with your token (`python -m assistant users token NAME` "
                           "on the server) or the server's api_token.", "invalid_api_key")
        request.state.user = user
    return check


# --- the router -----------------------------------------------------------------
def build_api(assistant: Assistant) -> APIRouter:
    """The ``/v1`` routes over ``assistant`` (see the module docstring)."""
    created = int(time.time())
    router = APIRouter(prefix="/v1", route_class=_OpenAIRoute,
                       dependencies=[Depends(_auth(assistant.access))])

    @router.get("/models")
    async def list_models() -> dict:
        ids = await run_in_threadpool(assistant.serving.model_ids)
        return {"object": "list", "data": [_model_card(i, created) for i in ids]}

    @router.get("/conversations")
    async def list_conversations(request: Request) -> dict:
        """The caller's own stored conversations (the page's), most recent first."""
        infos = await run_in_threadpool(assistant.conversations.list,
                                        request.state.user.name)
        return {"object": "list", "data": [_conversation_card(c) for c in infos]}

    admission = Admission(assistant.settings.server.max_queued_requests)

    @router.post("/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Response:
        admission.enter()
        handed_over = False
        try:
            model, events = await run_in_threadpool(start_turn, assistant, req,
                                                    request.state.user)
            first = await _next_in_thread(events)  # errors before the first token: HTTP status
            reply = _Reply("chatcmpl-" + uuid.uuid4().hex, int(time.time()), model)
            if req.stream:
                handed_over = True
                return StreamingResponse(
                    _sse(reply, first, events, admission.leave), media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            final = await run_in_threadpool(_collect, first, events)
            return JSONResponse(reply.completion(final))
        finally:
            if not handed_over:
                admission.leave()

    return router


def build_health(assistant: Assistant) -> APIRouter:
    """``GET /health``: ``{"status": "ok" | "degraded", "model": {"pid", "state", ...}}``;
    "degraded" while the model process is starting or down (the app itself is up)."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict:
        model = assistant.serving.status()
        return {"status": "ok" if model["state"] == "ready" else "degraded", "model": model}

    return router


class Admission:
    """At most ``limit`` chat completions in progress or waiting; one more is refused at
    once with 429 and ``Retry-After``, never left to time out or reset. Used from the
    event loop only, so a plain counter is enough.

    >>> a = Admission(1); a.enter()
    >>> try:
    ...     a.enter()
    ... except APIError as e:
    ...     print(e.status, e.headers)
    429 {'Retry-After': '2'}
    >>> a.leave(); a.enter()
    """

    def __init__(self, limit: int, retry_after_s: int = 2):
        self.limit, self.retry_after_s, self.active = limit, retry_after_s, 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise APIError(429, f"Docent is answering {self.active} requests, its limit "
                           "(server.max_queued_requests): retry after the time in "
                           "Retry-After.", "rate_limit_exceeded", "rate_limit_error",
                           {"Retry-After": str(self.retry_after_s)})
        self.active += 1

    def leave(self) -> None:
        self.active = max(0, self.active - 1)


def _conversation_card(c: ConversationInfo) -> dict:
    return {"id": c.conversation_id, "object": "conversation", "title": c.title,
            "knowledge_base": c.kb, "created_at": c.created_at, "updated_at": c.updated_at,
            "turns": c.turns}


def _model_card(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "docent"}


# --- one turn: text deltas, then a _Final ---------------------------------------
@dataclass(frozen=True)
class _Final:
    text: str
    sources: list[dict]
    prompt_tokens: int
    completion_tokens: int
    refused: str = ""  # why the answer is a refusal ("" for an answer)
    notices: tuple[str, ...] = ()  # the lines Docent added to the model's text

    def extra(self) -> dict:
        """Docent's fields beside OpenAI's: ``sources``, ``refused``, ``notices``."""
        return {"sources": self.sources, "refused": self.refused,
                "notices": list(self.notices)}

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


Events = Generator["str | _Final", None, None]


def start_turn(assistant: Assistant, req: ChatRequest,
               user: User = LOCAL) -> tuple[str, Events]:
    """Validate ``req`` (model, messages, knowledge bases); the model id and the turn's
    events: text deltas, then one ``_Final``. Nothing is generated until iterated.
    ``user``: the caller, recorded in the inference log."""
    ids = assistant.serving.model_ids()
    model = req.model or ids[0]
    if model not in ids:
        raise APIError(404, f"The model {model!r} does not exist; GET /v1/models lists "
                       f"the models: {', '.join(ids)}.", "model_not_found")
    if not req.messages:
        raise APIError(400, "'messages' is empty.", "invalid_request")
    if req.rag:
        kbs = _knowledge_bases(assistant, req.knowledge_base)
        question, history = split_messages(req.messages)
        return model, _rag_events(assistant, question, kbs, history, model, user.name)
    messages = [{"role": m.role, "content": m.text()} for m in req.messages
                if m.role in ("system", "user", "assistant")]
    if not any(m["role"] == "user" for m in messages):
        raise APIError(400, "No user message in 'messages'.", "invalid_request")
    max_tokens = req.max_completion_tokens or req.max_tokens
    return model, _plain_events(assistant, messages, max_tokens, req.temperature, model)


def _knowledge_bases(assistant: Assistant, requested: str | list[str] | None) -> list[str]:
    names = [requested] if isinstance(requested, str) else list(requested or [])
    names = names or [assistant.settings.default_kb]
    known = set(assistant.documents.knowledge_bases())
    for name in names:
        if name not in known:
            raise APIError(404, f"No knowledge base named {name!r}.",
                           "knowledge_base_not_found")
    return names


def split_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message is the question; each earlier user message with the
    assistant reply after it is a (question, answer) history turn.

    >>> m = [ChatMessage(role="system", content="Be brief."),
    ...      ChatMessage(role="user", content="Dose for adults?"),
    ...      ChatMessage(role="assistant", content="500 mg [1]."),
    ...      ChatMessage(role="user", content=[{"type": "text", "text": "And children?"}])]
    >>> split_messages(m)
    ('And children?', [('Dose for adults?', '500 mg [1].')])
    """
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise APIError(400, "No user message: the last user message is the question.",
                       "invalid_request")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in messages[:users[-1]]:
        if m.role == "user":
            pending = m.text()
        elif m.role == "assistant" and pending is not None:
            history.append((pending, m.text()))
            pending = None
    question = messages[users[-1]].text().strip()
    if not question:
        raise APIError(400, "The question (the last user message) is empty.", "invalid_request")
    return question, history


class _Trim:
    """Drops leading whitespace and holds back trailing whitespace of a stream, so the
    deltas add up to the stripped text.

    >>> t = _Trim()
    >>> [t.feed(p) for p in [" ", " Adults", " take ", "\\n", "500 mg.", "\\n"]]
    ['', 'Adults', ' take', '', ' \\n500 mg.', '']
    """

    def __init__(self) -> None:
        self.started, self.pending = False, ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        text = self.pending + text
        body = text.rstrip()
        self.pending = text[len(body):]
        return body


def _rag_events(assistant: Assistant, question: str, kbs: list[str],
                history: list[tuple[str, str]], model: str, user: str) -> Events:
    trim = _Trim()
    for event in assistant.chat.ask(question, kbs, history, model=model, user=user):
        if isinstance(event, AnswerDelta):
            text = trim.feed(event.text)
            if text:
                yield text
        elif isinstance(event, Answer):
            # the prompt the model read (0 when it was not asked: a refusal)
            holders = assistant.chat.holders([*event.sources, *event.citations])
            yield _Final(event.text, sources_payload(event, holders), event.prompt_tokens,
                         event.tokens, event.refused, event.notices)


def _plain_events(assistant: Assistant, messages: list[dict], max_tokens: int | None,
                  temperature: float | None, model: str) -> Events:
    trim, pieces = _Trim(), []
    for piece in assistant.chat.plain(messages, max_tokens, temperature, model):
        pieces.append(piece)
        text = trim.feed(piece)
        if text:
            yield text
    raw = "".join(pieces)
    count = assistant.serving.llm.count_tokens
    yield _Final(raw.strip(), [], sum(count(m["content"]) for m in messages),
                 count(raw) if raw else 0)


def sources_payload(answer: Answer, holders: dict[str, list[str]] | None = None
                    ) -> list[dict]:
    """The ``sources`` field: the cited sources (with their quotes) first, then the
    other sources the model was given. ``holders``: for a passage stored once for
    several documents (identical text), every document holding it (``documents``)."""
    holders = holders or {}
    rows = [{"number": c.number, "source": c.source, "page": c.page, "quote": c.quote,
             "chunk_id": c.chunk_id, "knowledge_base": c.kb, "cited": True,
             "inferred": c.inferred, "documents": holders.get(c.chunk_id, [c.source])}
            for c in answer.citations]
    cited = {c.number for c in answer.citations}
    rows += [{"number": s.number, "source": s.source, "page": s.page,
              "quote": s.text[:QUOTE_CHARS], "chunk_id": s.chunk_id, "knowledge_base": s.kb,
              "cited": False, "inferred": False, "documents": holders.get(s.chunk_id, [s.source])}
             for s in answer.sources if s.number not in cited]
    return rows


# --- response shapes --------------------------------------------------------------
@dataclass(frozen=True)
class _Reply:
    id: str
    created: int
    model: str

    def completion(self, final: _Final) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": final.text},
                  "finish_reason": "stop", "logprobs": None}
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "choices": [choice], "usage": final.usage(),
                **final.extra()}

    def chunk(self, delta: dict, finish: str | None = None, **extra: Any) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [choice], **extra}


async def _next_in_thread(events: Generator) -> Any:
    """The next event, computed in a worker thread so the server stays responsive."""
    return await run_in_threadpool(next, events, _END)


def _collect(first: Any, events: Generator) -> _Final:
    for item in itertools.chain([first], events):
        if isinstance(item, _Final):
            return item
    raise RuntimeError("The answer ended without its final event.")


async def _sse(reply: _Reply, first: Any, events: Generator,
               done: Callable[[], None] = lambda: None) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks, a final chunk with
    ``finish_reason`` "stop", ``sources`` and ``usage``, then ``[DONE]``."""
    try:
        yield _data(reply.chunk({"role": "assistant", "content": ""}))
        item = first
        while item is not _END:
            if isinstance(item, _Final):
                yield _data(reply.chunk({}, "stop", usage=item.usage(), **item.extra()))
            else:
                yield _data(reply.chunk({"content": item}))
            item = await _next_in_thread(events)
        yield "data: [DONE]\n\n"
    except Exception as exc:  # noqa: BLE001 - the edge: after the headers, report in the stream
        yield _data(api_error(exc).body())
    finally:
        done()
        await _close(events)  # e.g. the client left: free the model's slot at once


async def _close(events: Generator) -> None:
    """Close ``events``; while a worker thread is still computing its next item (the
    client left mid-token), try again until it is done."""
    for _ in range(1200):
        try:
            events.close()
            return
        except ValueError:  # "generator already executing"
            await asyncio.sleep(0.1)
    log.warning("An answer could not be closed after its client left")


def _data(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

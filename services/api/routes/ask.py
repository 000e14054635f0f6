"""``/ask/stream`` (Server-Sent Events, by POST body or GET query), and what ``POST /ask`` (JSON,
``services.api.lean_ask``) shares with it.

A stream is opened in a dependency, before the response starts: errors up to its first event
(bad input, vector DB down) are a plain HTTP error; after it, the 200 has been sent, so an error
is an ``error`` event. FastAPI's ``EventSourceResponse`` frames the events and sends a
``: ping`` comment when no event came for 15 s, so proxies keep an idle stream open."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent

from rag.errors import RagError
from rag.metrics import Metrics
from rag.pipeline import StreamEnd, StreamEvent, StreamStart, StreamToken
from rag.sessions import TurnPlan
from rag.settings import Settings
from rag.tenant import Tenant
from rag.types import AskOptions
from services.api.deps import SettingsDep, TenantDep
from services.api.errors import http_status_for
from services.schemas import AskQuery, AskRequest, SemanticPublic, SourcePublic

router = APIRouter(tags=["ask"])

STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "SSE: meta, token…, done | error (JSON data)",
    }
}


def options_of(body: AskRequest, settings: Settings) -> AskOptions:
    return AskOptions(
        top_k=body.top_k or settings.top_k,
        mode=body.cache.mode,
        semantic=body.cache.semantic,
        threshold=body.cache.threshold,
    )


async def begin_turn(tenant: Tenant, body: AskRequest, options: AskOptions) -> TurnPlan | None:
    """With a ``session_id``: the question made standalone from the session's history."""
    if body.session_id is None:
        return None
    tenant.pipeline.validate(body.query, options)
    return await tenant.conversations.begin(body.session_id, body.query)


def _sse(event: str, data: dict[str, Any]) -> ServerSentEvent:
    # Serialized here, not by FastAPI (``data=``), to keep non-ASCII text unescaped on the wire.
    return ServerSentEvent(event=event, raw_data=json.dumps(data, ensure_ascii=False))


def _meta(event: StreamStart, turn: TurnPlan | None) -> ServerSentEvent:
    meta: dict[str, Any] = {
        "cache": event.cache.as_dict(),
        "sources": [SourcePublic.of(s).model_dump() for s in event.sources],
    }
    if event.semantic is not None:
        meta["semantic"] = SemanticPublic.of(event.semantic).model_dump()
    if turn is not None:
        meta["session_id"] = turn.session_id
        meta["standalone_query"] = turn.standalone
    return _sse("meta", meta)


def _frame(event: StreamEvent) -> ServerSentEvent:
    if isinstance(event, StreamToken):
        return _sse("token", {"text": event.text})
    assert isinstance(event, StreamEnd)
    usage = {
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
    }
    done = {
        "cache": event.cache.as_dict(),
        "usage": usage,
        "timings_ms": event.timings_ms,
        "request_id": event.request_id,
    }
    return _sse("done", done)


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A pipeline stream whose first event (``StreamStart``) has arrived."""

    first: StreamStart
    events: AsyncGenerator[StreamEvent, None]
    turn: TurnPlan | None
    metrics: Metrics

    async def frames(self) -> AsyncIterator[ServerSentEvent]:
        try:
            yield _meta(self.first, self.turn)
            async for event in self.events:
                yield _frame(event)
        except RagError as exc:
            self.metrics.record_error(exc)
            yield _sse("error", {"status": http_status_for(exc), "detail": str(exc)})


@asynccontextmanager
async def _opened(
    tenant: Tenant, body: AskRequest, settings: Settings
) -> AsyncIterator[OpenStream]:
    options = options_of(body, settings)
    turn = await begin_turn(tenant, body, options)
    events = tenant.pipeline.stream(turn.standalone if turn else body.query, options)
    if turn is not None:
        events = tenant.conversations.record(turn, events)
    try:
        first = await anext(events)
        assert isinstance(first, StreamStart)
        yield OpenStream(first=first, events=events, turn=turn, metrics=tenant.pipeline.metrics)
    finally:
        await events.aclose()  # on disconnect: stops the upstream stream, stores nothing


async def open_body_stream(
    body: AskRequest, tenant: TenantDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
    async with _opened(tenant, body, settings) as stream:
        yield stream


def _strict_utf8_query(request: Request) -> None:
    """Starlette decodes a query string's percent-escapes with U+FFFD for what is not UTF-8 (an
    encoded surrogate, latin-1): such a query would be answered as a question nobody asked."""
    for part in request.scope["query_string"].split(b"&"):
        try:
            unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            error = {"type": "string_unicode", "loc": ("query",), "input": None}
            raise RequestValidationError(
                [{**error, "msg": "the query string is not valid UTF-8 once percent-decoded"}]
            ) from None


async def open_query_stream(
    request: Request, params: Annotated[AskQuery, Query()], tenant: TenantDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
    _strict_utf8_query(request)
    async with _opened(tenant, params.as_request(), settings) as stream:
        yield stream


@router.post("/ask/stream", response_class=EventSourceResponse, responses=STREAM_DOC)
async def ask_stream(
    stream: Annotated[OpenStream, Depends(open_body_stream)],
) -> AsyncIterator[ServerSentEvent]:
    async for frame in stream.frames():
        yield frame


@router.get("/ask/stream", response_class=EventSourceResponse, responses=STREAM_DOC)
async def ask_stream_get(
    stream: Annotated[OpenStream, Depends(open_query_stream)],
) -> AsyncIterator[ServerSentEvent]:
    async for frame in stream.frames():
        yield frame

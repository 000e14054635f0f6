"""``POST /ask`` (JSON) and ``/ask/stream`` (Server-Sent Events, by POST body or GET query).

A stream is opened in a dependency, before the response starts: errors up to its first event
(bad input, vector DB down) are a plain HTTP error; after it, the 200 has been sent, so an error
is an ``error`` event. FastAPI's ``EventSourceResponse`` frames the events and sends a
``: ping`` comment when no event came for 15 s, so proxies keep an idle stream open."""

from __future__ import annotations

import email.message
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from rag.errors import RagError
from rag.pipeline import StreamEnd, StreamEvent, StreamStart, StreamToken
from rag.sessions import TurnPlan
from rag.settings import Settings
from rag.tenant import Tenant
from rag.types import AskOptions
from services.api.deps import SettingsDep, TenantDep, get_tenant
from services.api.errors import http_status_for
from services.schemas import (
    AskQuery,
    AskRequest,
    AskResponse,
    SemanticPublic,
    SourcePublic,
    ask_response_json,
)

router = APIRouter(tags=["ask"])

STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "SSE: meta, token…, done | error (JSON data)",
    }
}


def _options(body: AskRequest, settings: Settings) -> AskOptions:
    return AskOptions(
        top_k=body.top_k or settings.top_k,
        mode=body.cache.mode,
        semantic=body.cache.semantic,
        threshold=body.cache.threshold,
    )


async def _begin_turn(tenant: Tenant, body: AskRequest, options: AskOptions) -> TurnPlan | None:
    """With a ``session_id``: the question made standalone from the session's history."""
    if body.session_id is None:
        return None
    tenant.pipeline.validate(body.query, options)
    return await tenant.conversations.begin(body.session_id, body.query)


def _parse_ask(raw: bytes, content_type: str) -> AskRequest:
    """The body of ``POST /ask``. A JSON body is parsed and validated in one pass by
    pydantic-core (FastAPI would take three: read, ``json.loads``, validate). Anything that pass
    refuses is read again the way FastAPI reads a body model, so every error, its status and its
    wording stay what FastAPI gives (pydantic-core's JSON parser words some of them differently,
    e.g. a lone surrogate escape)."""
    if content_type.startswith("application/json"):
        try:
            return AskRequest.model_validate_json(raw)
        except ValidationError:
            pass
    return _parse_as_fastapi_does(raw, content_type)


def _parse_as_fastapi_does(raw: bytes, content_type: str) -> AskRequest:
    if not raw:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    data: Any = raw  # a body that is not declared JSON is refused by the model, as FastAPI does
    if _is_json(content_type):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
            raise RequestValidationError(
                [{**error, "input": {}, "ctx": {"error": exc.msg}}]
            ) from None
    try:
        return AskRequest.model_validate(data, from_attributes=True)  # as FastAPI validates
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def ask(request: Request) -> Response:
    """Takes the request itself rather than a body model and dependencies: on a cached answer,
    FastAPI's dependency solving and body handling cost more than the cache lookup (profile in
    docs/profile-hit-path.md). The OpenAPI schema is declared in ``add_cached_path``."""
    settings: Settings = request.app.state.settings
    tenant = await get_tenant(request)
    body = _parse_ask(await request.body(), request.headers.get("content-type", ""))
    options = _options(body, settings)
    turn = await _begin_turn(tenant, body, options)
    answer = await tenant.pipeline.answer(turn.standalone if turn else body.query, options)
    if turn is not None:
        await tenant.conversations.finish(turn, answer.text)
    # Serialized here; returning the model would make FastAPI validate it again.
    return Response(ask_response_json(answer, turn), media_type="application/json")


def add_cached_path(app: FastAPI) -> None:
    """``POST /ask`` as a plain route of the app, ahead of the routers: FastAPI spends ~10 µs per
    request matching a route of an included router, a tenth of a cached answer's time."""
    body_schema = {"$ref": "#/components/schemas/AskRequest"}  # also the body of /ask/stream
    app.add_api_route(
        "/ask",
        ask,
        methods=["POST"],
        response_model=AskResponse,
        tags=["ask"],
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": body_schema}},
                "required": True,
            },
            "responses": {
                "422": {
                    "description": "Validation Error",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                        }
                    },
                }
            },
        },
    )


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
    return _sse(
        "done", {"cache": event.cache.as_dict(), "usage": usage, "timings_ms": event.timings_ms}
    )


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A pipeline stream whose first event (``StreamStart``) has arrived."""

    first: StreamStart
    events: AsyncGenerator[StreamEvent, None]
    turn: TurnPlan | None

    async def frames(self) -> AsyncIterator[ServerSentEvent]:
        try:
            yield _meta(self.first, self.turn)
            async for event in self.events:
                yield _frame(event)
        except RagError as exc:
            yield _sse("error", {"status": http_status_for(exc), "detail": str(exc)})


@asynccontextmanager
async def _opened(
    tenant: Tenant, body: AskRequest, settings: Settings
) -> AsyncIterator[OpenStream]:
    options = _options(body, settings)
    turn = await _begin_turn(tenant, body, options)
    events = tenant.pipeline.stream(turn.standalone if turn else body.query, options)
    if turn is not None:
        events = tenant.conversations.record(turn, events)
    try:
        first = await anext(events)
        assert isinstance(first, StreamStart)
        yield OpenStream(first=first, events=events, turn=turn)
    finally:
        await events.aclose()  # on disconnect: stops the upstream stream, stores nothing


async def open_body_stream(
    body: AskRequest, tenant: TenantDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
    async with _opened(tenant, body, settings) as stream:
        yield stream


async def open_query_stream(
    params: Annotated[AskQuery, Query()], tenant: TenantDep, settings: SettingsDep
) -> AsyncIterator[OpenStream]:
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

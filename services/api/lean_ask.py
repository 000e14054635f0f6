"""``POST /ask``: the lean path every cached answer takes, kept apart so that nobody copies it
as the model of a route.

The goal it serves (issue #16): a cached answer costs about one Redis round trip over HTTP. On
the hit path FastAPI's body handling and dependency solving cost more than the cache lookup
(profile in ``docs/profile-hit-path.md``: in-process hit 605 → 390 µs with this path), so this
route takes the request itself, parses the body in one pydantic-core pass and serializes the
answer once. It must answer every input exactly as the general path does (``/ask/stream``, same
``AskRequest`` model, same statuses and JSON errors):
``tests/e2e/test_security.py::test_the_lean_ask_route_refuses_bodies_exactly_as_fastapi_does``
compares the two."""

from __future__ import annotations

import email.message
import json
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from rag.settings import Settings
from services.api.deps import get_tenant
from services.api.routes.ask import begin_turn, options_of
from services.schemas import AskRequest, AskResponse, ask_response_json


def _parse_ask(raw: bytes, content_type: str) -> AskRequest:
    """The body of ``POST /ask``. A JSON body is parsed and validated in one pass by
    pydantic-core (FastAPI would take three: read, ``json.loads``, validate). Anything that pass
    refuses is read again the way FastAPI reads a body model, so every error, its status and its
    wording stay what FastAPI gives (pydantic-core's JSON parser words some of them differently,
    e.g. a lone surrogate escape)."""
    if content_type == "application/json" or content_type.startswith("application/json;"):
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
        except Exception as exc:  # not UTF-8, nested past the recursion limit, …: as FastAPI
            raise HTTPException(400, "There was an error parsing the body") from exc
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
    options = options_of(body, settings)
    turn = await begin_turn(tenant, body, options)
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

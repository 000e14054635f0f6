"""The HTTP service: ``create_app(settings)`` builds a FastAPI app whose lifespan opens (and
closes) everything ``rag.wiring`` builds, and includes the routers of ``services.api.routes``.

Errors are JSON ``{"detail": ...}`` whatever happens: library errors get their status
(``http_status_for``), validation errors a 422 that can always be encoded, anything else a 500.
The body size limit stays our own ASGI middleware (``services.limits``): FastAPI's
``max_body_size`` answers a declared over-limit ``Content-Length`` in plain text."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rag.embedding import SentenceTransformerEmbedder
from rag.errors import InvalidFieldError, RagError
from rag.settings import Settings
from rag.wiring import open_services
from services.api.disconnect import ClientGoneFromStream
from services.api.errors import headers_for, http_status_for, json_safe
from services.api.lean_ask import add_cached_path
from services.api.routes import ROUTERS
from services.limits import BodySizeLimit

__all__ = ["create_app", "http_status_for"]

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(
    embedder: SentenceTransformerEmbedder | None, llm_http_client: httpx2.AsyncClient | None
) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        if not settings.admin_api_key.get_secret_value():
            log.warning("RAG_ADMIN_API_KEY is not set: admin endpoints are open (development only)")
        async with open_services(
            settings, embedder=embedder, llm_http_client=llm_http_client
        ) as services:
            app.state.services = services
            app.state.key_tenants = settings.api_key_tenants()
            # Everything loaded so far (the models, the clients) lives as long as the app: keep
            # it out of the garbage collector's full passes, which otherwise walk millions of
            # objects and stall the event loop for tens of milliseconds (the p99 of cached hits).
            gc.collect()
            gc.freeze()
            yield

    return lifespan


async def _rag_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagError)
    request.app.state.services.metrics.record_error(exc)
    if isinstance(exc, InvalidFieldError):  # a validation error like the request model's own
        where = "query" if request.method == "GET" else "body"
        error = {"type": "value_error", "loc": [where, exc.field], "msg": str(exc)}
        return JSONResponse(
            {"detail": json_safe([{**error, "input": exc.value}])},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return JSONResponse(
        {"detail": str(exc)}, status_code=http_status_for(exc), headers=headers_for(exc)
    )


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own handler fails (a plain-text 500) on the inputs most worth refusing: NaN,
    infinities, lone surrogates, since it echoes them back."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": json_safe(exc.errors())}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


def create_app(
    settings: Settings | None = None,
    *,
    embedder: SentenceTransformerEmbedder | None = None,
    llm_http_client: httpx2.AsyncClient | None = None,
) -> FastAPI:
    """The app. ``embedder`` and ``llm_http_client`` are for tests (share a loaded model; script
    the LLM transport)."""
    settings = settings or Settings()
    app = FastAPI(
        title="RAG service with layered caching",
        summary="Answers questions over your documents; every expensive stage is cached.",
        lifespan=_lifespan(embedder, llm_http_client),
        # FastAPI's OpenTelemetry hooks look up the global providers on every request (~5 % of a
        # cached answer's time, profiled) even when no OpenTelemetry SDK is configured.
        telemetry={
            "tracing": settings.telemetry,
            "metrics": settings.telemetry,
            "logs": settings.telemetry,
        },
    )
    app.state.settings = settings
    app.add_middleware(ClientGoneFromStream, path="/ask/stream")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RagError, _rag_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
    add_cached_path(app)  # first: the path every cached answer takes
    for router in ROUTERS:
        app.include_router(router)
    return app

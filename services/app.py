"""The HTTP service: ``create_app(settings)`` builds a FastAPI app whose lifespan opens (and
closes) everything ``rag.wiring`` builds."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx2
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag.cache.tags import LAYERS
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import (
    CacheUnavailableError,
    DocumentNotFoundError,
    FlightFailedError,
    FlightTimeoutError,
    InvalidInputError,
    LLMError,
    LLMRateLimitError,
    LLMTimeoutError,
    RagError,
    RetrievalError,
)
from rag.ingest import Document
from rag.pipeline import StreamEnd, StreamEvent, StreamStart, StreamToken
from rag.sessions import SESSION_ID, TurnPlan
from rag.settings import Settings
from rag.types import AskOptions, CacheMode
from rag.wiring import Services, Tenant, open_services
from services.limits import BodySizeLimit
from services.schemas import (
    AskRequest,
    AskResponse,
    CacheInvalidate,
    CacheInvalidated,
    CacheOptions,
    DocumentCreate,
    DocumentDeleted,
    DocumentPublic,
    SemanticPublic,
    SessionDeleted,
    SessionPublic,
    SourcePublic,
)

log = logging.getLogger(__name__)

WEB_PAGE = Path(__file__).parent / "static" / "index.html"

_ERROR_STATUS: list[tuple[type[RagError], int]] = [
    (InvalidInputError, status.HTTP_400_BAD_REQUEST),
    (DocumentNotFoundError, status.HTTP_404_NOT_FOUND),
    (LLMTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (FlightTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (FlightFailedError, status.HTTP_502_BAD_GATEWAY),
    (LLMRateLimitError, status.HTTP_429_TOO_MANY_REQUESTS),
    (LLMError, status.HTTP_502_BAD_GATEWAY),
    (RetrievalError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (CacheUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


def http_status_for(exc: RagError) -> int:
    return next((code for kind, code in _ERROR_STATUS if isinstance(exc, kind)), 500)


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
SessionIdPath = Annotated[str, PathParam(pattern=SESSION_ID.pattern)]


def _matching_key(given: str | None, keys: list[str]) -> int | None:
    """The index of the key equal to ``given``; each comparison takes constant time."""
    if not given:
        return None
    return next(
        (i for i, key in enumerate(keys) if secrets.compare_digest(given.encode(), key.encode())),
        None,
    )


async def require_admin(services: ServicesDep, credentials: BearerDep) -> None:
    key = services.corpus.settings.admin_api_key.get_secret_value()
    given = credentials.credentials if credentials else None
    if key and _matching_key(given, [key]) is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin endpoints need 'Authorization: Bearer <RAG_ADMIN_API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def get_tenant(request: Request) -> Tenant:
    """Whom /ask serves. With RAG_API_KEYS set, the tenant of the bearer key (or 401); without,
    the one open tenant. Reads the header itself: one dependency on the cached path, not three."""
    services: Services = request.app.state.services
    key_tenants: list[tuple[str, str]] = request.app.state.key_tenants
    if not key_tenants:
        return services.default
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    found = _matching_key(given.strip(), [key for key, _ in key_tenants])
    if scheme.lower() == "bearer" and found is not None:
        return services.tenants[key_tenants[found][1]]
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "this service needs 'Authorization: Bearer <API key>' (one of RAG_API_KEYS)",
        headers={"WWW-Authenticate": "Bearer"},
    )


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def _options(body: AskRequest, settings: Settings) -> AskOptions:
    return AskOptions(
        top_k=body.top_k or settings.top_k,
        mode=body.cache.mode,
        semantic=body.cache.semantic,
        threshold=body.cache.threshold,
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _event_bytes(event: StreamEvent, turn: TurnPlan | None = None) -> bytes:
    if isinstance(event, StreamToken):
        return _sse("token", {"text": event.text})
    if isinstance(event, StreamStart):
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
    assert isinstance(event, StreamEnd)
    return _sse(
        "done",
        {
            "cache": event.cache.as_dict(),
            "usage": {
                "prompt_tokens": event.usage.prompt_tokens,
                "completion_tokens": event.usage.completion_tokens,
            },
            "timings_ms": event.timings_ms,
        },
    )


async def _begin_turn(tenant: Tenant, body: AskRequest, options: AskOptions) -> TurnPlan | None:
    """With a ``session_id``: the question made standalone from the session's history."""
    if body.session_id is None:
        return None
    tenant.pipeline.validate(body.query, options)
    return await tenant.conversations.begin(body.session_id, body.query)


async def _stream_response(
    tenant: Tenant, body: AskRequest, settings: Settings
) -> StreamingResponse:
    """Errors before the first event (bad input, vector DB down) become a plain HTTP error; errors
    after it become an ``error`` event, since the 200 status has already been sent."""
    options = _options(body, settings)
    turn = await _begin_turn(tenant, body, options)
    events = tenant.pipeline.stream(turn.standalone if turn else body.query, options)
    if turn is not None:
        events = tenant.conversations.record(turn, events)
    first = await anext(events)

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            yield _event_bytes(first, turn)
            async for event in events:
                yield _event_bytes(event)
        except RagError as exc:
            yield _sse("error", {"status": http_status_for(exc), "detail": str(exc)})
        finally:
            await events.aclose()  # on disconnect: stops the upstream stream, stores nothing

    return StreamingResponse(
        body_iter(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.admin_api_key.get_secret_value():
            log.warning("RAG_ADMIN_API_KEY is not set: admin endpoints are open (development only)")
        async with open_services(
            settings, embedder=embedder, llm_http_client=llm_http_client
        ) as services:
            app.state.services = services
            app.state.key_tenants = settings.api_key_tenants()
            yield

    app = FastAPI(
        title="RAG service with layered caching",
        summary="Answers questions over your documents; every expensive stage is cached.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RagError)
    async def rag_error(_: Request, exc: RagError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=http_status_for(exc))

    @app.post("/ask", response_model=AskResponse)
    async def ask(body: AskRequest, tenant: TenantDep) -> Response:
        options = _options(body, settings)
        turn = await _begin_turn(tenant, body, options)
        answer = await tenant.pipeline.answer(turn.standalone if turn else body.query, options)
        if turn is not None:
            await tenant.conversations.finish(turn, answer.text)
        # Serialized once here; returning the model would make FastAPI validate it again.
        return Response(
            AskResponse.of(answer, turn).model_dump_json(), media_type="application/json"
        )

    stream_doc = {
        "200": {
            "content": {"text/event-stream": {}},
            "description": "SSE: meta, token…, done | error",
        }
    }

    @app.post("/ask/stream", responses=stream_doc)  # type: ignore[arg-type]
    async def ask_stream(body: AskRequest, tenant: TenantDep) -> StreamingResponse:
        return await _stream_response(tenant, body, settings)

    @app.get("/ask/stream", responses=stream_doc)  # type: ignore[arg-type]
    async def ask_stream_get(
        tenant: TenantDep,
        query: Annotated[str, Query(min_length=1)],
        top_k: Annotated[int | None, Query(ge=1)] = None,
        mode: CacheMode = CacheMode.DEFAULT,
        semantic: bool | None = None,
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
        session_id: Annotated[str | None, Query(pattern=SESSION_ID.pattern)] = None,
    ) -> StreamingResponse:
        body = AskRequest(
            query=query,
            top_k=top_k,
            cache=CacheOptions(mode=mode, semantic=semantic, threshold=threshold),
            session_id=session_id,
        )
        return await _stream_response(tenant, body, settings)

    @app.get("/sessions/{session_id}", response_model=SessionPublic)
    async def get_session(session_id: SessionIdPath, tenant: TenantDep) -> SessionPublic:
        view = await tenant.conversations.sessions.view(session_id)
        if view is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no session {session_id!r} (never used, or expired)"
            )
        return SessionPublic.of(view)

    @app.delete("/sessions/{session_id}", response_model=SessionDeleted)
    async def delete_session(session_id: SessionIdPath, tenant: TenantDep) -> SessionDeleted:
        deleted = await tenant.conversations.sessions.delete(session_id)
        return SessionDeleted(session_id=session_id, deleted=deleted)

    @app.post(
        "/documents",
        response_model=DocumentPublic,
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(require_admin)],
    )
    async def add_document(body: DocumentCreate, services: ServicesDep) -> DocumentPublic:
        if len(body.text) > settings.max_document_chars:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                f"document text is longer than {settings.max_document_chars} characters",
            )
        document = Document(doc_id=body.doc_id, text=body.text, source=body.source or body.doc_id)
        report = await services.corpus.ingestor.add([document])
        return DocumentPublic(
            doc_id=body.doc_id,
            chunks=report.chunks,
            replaced_chunks=report.replaced_chunks,
            corpus_version=report.corpus_version,
        )

    @app.delete(
        "/documents/{doc_id:path}",
        response_model=DocumentDeleted,
        dependencies=[Depends(require_admin)],
    )
    async def delete_document(doc_id: str, services: ServicesDep) -> DocumentDeleted:
        removed = await services.corpus.ingestor.delete(doc_id)
        return DocumentDeleted(doc_id=doc_id, deleted_chunks=removed)

    @app.post(
        "/cache/invalidate", response_model=CacheInvalidated, dependencies=[Depends(require_admin)]
    )
    async def invalidate(body: CacheInvalidate, services: ServicesDep) -> CacheInvalidated:
        if body.tag is not None:  # tags live in the base namespace and list every tenant's keys
            return CacheInvalidated(deleted=await services.corpus.tags.invalidate_tag(body.tag))
        layers = [body.layer] if body.layer else list(LAYERS)
        scopes = {t.namespace: t.invalidation for t in services.tenants.values()}
        scopes.setdefault(settings.namespace, services.corpus.tags)
        deleted = 0
        for scope in scopes.values():
            deleted += await scope.invalidate_layers(layers)
        if body.all or body.layer == "semantic":
            for tenant in services.tenants.values():
                if tenant.pipeline.semantic is not None:
                    tenant.pipeline.semantic.index.clear()  # other processes drop them by message
        return CacheInvalidated(deleted=deleted)

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        """The page to ask questions and watch answers stream with their cache badges."""
        return FileResponse(WEB_PAGE, media_type="text/html; charset=utf-8")

    @app.get("/healthz")
    async def healthz(services: ServicesDep) -> JSONResponse:
        cache_up = await services.corpus.store.ping()
        try:
            documents: int | None = await services.corpus.retriever.count()
        except RetrievalError:
            documents = None
        healthy = cache_up and documents is not None
        return JSONResponse(
            {
                "status": "ok" if healthy else "degraded",
                "cache": "up" if cache_up else "down",
                "vector_db": "up" if documents is not None else "down",
                "chunks": documents,
            }
        )

    @app.get("/stats")
    async def stats(services: ServicesDep) -> dict[str, Any]:
        snapshot = services.metrics.snapshot()
        semantic = [t.pipeline.semantic for t in services.tenants.values() if t.pipeline.semantic]
        if semantic:
            snapshot["semantic"] = semantic[0].stats()  # settings are the same for every tenant
            for counter in ("entries", "evictions"):  # counts are summed over them
                snapshot["semantic"][counter] = sum(cache.stats()[counter] for cache in semantic)
            snapshot["semantic"]["synced"] = all(cache.synced for cache in semantic)
        return snapshot

    @app.get("/metrics", response_class=Response)
    async def metrics(services: ServicesDep) -> Response:
        return Response(
            services.metrics.prometheus_text(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    return app

"""Operating the service: ``/healthz``, ``/stats`` (JSON), ``/metrics`` (Prometheus) and the
page at ``/``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from rag.errors import RetrievalError
from rag.wiring import Services
from services.api.deps import ReaderDep, ScraperDep, ServicesDep, own_tenants

router = APIRouter(tags=["operations"])

WEB_PAGE = Path(__file__).resolve().parents[2] / "static" / "index.html"


@router.get("/", include_in_schema=False)
async def web_page() -> FileResponse:
    """The page to ask questions and watch answers stream with their cache badges."""
    return FileResponse(WEB_PAGE, media_type="text/html; charset=utf-8")


async def _chunks(services: Services) -> int | None:
    try:
        return await services.corpus.retriever.count()
    except RetrievalError:
        return None


async def _llm_state(services: Services) -> str:
    """``up`` or ``down``: whether the LLM server answers (``OpenAIGenerator.ping``)."""
    return "up" if await services.generator.ping() else "down"


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    """Always 200; ``status`` is ``degraded`` when the cache store, the vector DB or the LLM is
    down (the service still answers what it can: the cache fails open)."""
    cache_up, chunks, llm = await asyncio.gather(
        services.corpus.redis.ping(), _chunks(services), _llm_state(services)
    )
    healthy = cache_up and chunks is not None and llm != "down"
    return JSONResponse(
        {
            "status": "ok" if healthy else "degraded",
            "cache": "up" if cache_up else "down",
            "vector_db": "up" if chunks is not None else "down",
            "llm": llm,
            "chunks": chunks,
            "corpus_version": services.corpus.corpus_version.current,
        }
    )


@router.get("/stats")
async def stats(services: ServicesDep, _: ReaderDep, request: Request) -> dict[str, Any]:
    """A tenant's key sees its own semantic scopes; the admin key, or an open service, all."""
    return await services.stats(tenants=own_tenants(request))


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep, _: ScraperDep) -> Response:
    return Response(
        services.metrics.prometheus_text(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )

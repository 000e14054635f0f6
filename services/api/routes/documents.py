"""Adding (or replacing) and deleting documents: admin only. A client that leaves before its
document is written cancels the write: the old version stays current, nothing of the new one is
searchable (``rag.ingest``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Request, status

from rag.ingest import Document
from services.api.deps import AdminDep, ServicesDep, SettingsDep
from services.schemas import DocumentCreate, DocumentDeleted, DocumentPublic

router = APIRouter(prefix="/documents", tags=["documents"])
T = TypeVar("T")
_DISCONNECT_POLL_S = 0.25
# nginx's "client closed request": nobody reads it, but the log says what happened
CLIENT_CLOSED_REQUEST = 499


async def _while_connected(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled if the client disconnects before it is done."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise HTTPException(
                    CLIENT_CLOSED_REQUEST, "the client left; the document was not changed"
                )
    finally:
        task.cancel()


@router.post("", response_model=DocumentPublic, status_code=status.HTTP_201_CREATED)
async def add_document(
    body: DocumentCreate,
    request: Request,
    services: ServicesDep,
    settings: SettingsDep,
    _: AdminDep,
) -> DocumentPublic:
    if len(body.text) > settings.max_document_chars:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"document text is longer than {settings.max_document_chars} characters",
        )
    document = Document(doc_id=body.doc_id, text=body.text, source=body.source or body.doc_id)
    report = await _while_connected(request, services.corpus.ingestor.add([document]))
    return DocumentPublic(
        doc_id=body.doc_id,
        chunks=report.chunks,
        replaced_chunks=report.replaced_chunks,
        corpus_version=report.corpus_version,
    )


@router.delete("/{doc_id:path}", response_model=DocumentDeleted)
async def delete_document(doc_id: str, services: ServicesDep, _: AdminDep) -> DocumentDeleted:
    removed = await services.corpus.ingestor.delete(doc_id)
    return DocumentDeleted(doc_id=doc_id, deleted_chunks=removed)

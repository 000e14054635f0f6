"""Adding (or replacing) and deleting documents: admin only."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from rag.ingest import Document
from services.api.deps import AdminDep, ServicesDep, SettingsDep
from services.schemas import DocumentCreate, DocumentDeleted, DocumentPublic

router = APIRouter(prefix="/documents", tags=["documents"])


@router.post("", response_model=DocumentPublic, status_code=status.HTTP_201_CREATED)
async def add_document(
    body: DocumentCreate, services: ServicesDep, settings: SettingsDep, _: AdminDep
) -> DocumentPublic:
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


@router.delete("/{doc_id:path}", response_model=DocumentDeleted)
async def delete_document(doc_id: str, services: ServicesDep, _: AdminDep) -> DocumentDeleted:
    removed = await services.corpus.ingestor.delete(doc_id)
    return DocumentDeleted(doc_id=doc_id, deleted_chunks=removed)

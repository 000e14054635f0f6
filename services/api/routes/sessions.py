"""A conversation's turns (``GET``) and forgetting them (``DELETE``), per tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from fastapi import Path as PathParam

from rag.sessions import SESSION_ID
from services.api.deps import TenantDep
from services.schemas import SessionDeleted, SessionPublic

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionIdPath = Annotated[str, PathParam(pattern=SESSION_ID.pattern)]


@router.get("/{session_id}", response_model=SessionPublic)
async def get_session(session_id: SessionIdPath, tenant: TenantDep) -> SessionPublic:
    view = await tenant.conversations.sessions.view(session_id)
    if view is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no session {session_id!r} (never used, or expired)"
        )
    return SessionPublic.of(view)


@router.delete("/{session_id}", response_model=SessionDeleted)
async def delete_session(session_id: SessionIdPath, tenant: TenantDep) -> SessionDeleted:
    deleted = await tenant.conversations.sessions.delete(session_id)
    return SessionDeleted(session_id=session_id, deleted=deleted)

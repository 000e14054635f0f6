"""Explicit invalidation, by layer, tag or everything: admin only."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import AdminDep, ServicesDep
from services.schemas import CacheInvalidate, CacheInvalidated

router = APIRouter(prefix="/cache", tags=["cache"])


@router.post("/invalidate", response_model=CacheInvalidated)
async def invalidate(body: CacheInvalidate, services: ServicesDep, _: AdminDep) -> CacheInvalidated:
    invalidation = services.invalidation
    if body.tag is not None:
        deleted = await invalidation.by_tag(body.tag)
    elif body.layer is not None:
        deleted = await invalidation.by_layer(body.layer)
    else:
        deleted = await invalidation.everything()
    return CacheInvalidated(deleted=deleted)

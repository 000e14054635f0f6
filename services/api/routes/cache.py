"""Explicit invalidation, by layer, tag or everything: admin only."""

from __future__ import annotations

from fastapi import APIRouter

from rag.cache.registry import INVALIDATION_TARGETS, SEMANTIC_SEGMENT
from rag.cache.tags import LAYERS as EVERY_SEGMENT
from services.api.deps import AdminDep, ServicesDep, SettingsDep
from services.schemas import CacheInvalidate, CacheInvalidated

router = APIRouter(prefix="/cache", tags=["cache"])


@router.post("/invalidate", response_model=CacheInvalidated)
async def invalidate(
    body: CacheInvalidate, services: ServicesDep, settings: SettingsDep, _: AdminDep
) -> CacheInvalidated:
    if body.tag is not None:  # tags live in the base namespace and list every tenant's keys
        return CacheInvalidated(deleted=await services.corpus.tags.invalidate_tag(body.tag))
    layers = [body.layer] if body.layer else list(EVERY_SEGMENT)
    scopes = {t.namespace: t.invalidation for t in services.tenants.values()}
    scopes.setdefault(settings.namespace, services.corpus.tags)
    deleted = 0
    for scope in scopes.values():
        deleted += await scope.invalidate_layers(layers)
    if body.all or (body.layer and INVALIDATION_TARGETS[body.layer] == SEMANTIC_SEGMENT):
        for tenant in services.tenants.values():
            if tenant.pipeline.semantic is not None:
                tenant.pipeline.semantic.index.clear()  # other processes drop them by message
    return CacheInvalidated(deleted=deleted)

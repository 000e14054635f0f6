"""What routes depend on, as ``Annotated`` aliases: the services and settings the app holds on
``app.state``, and the key checks.

Keys: admin routes take ``Authorization: Bearer <RAG_ADMIN_API_KEY>`` (open when it is empty, in
development); ``/ask`` and the session routes serve the tenant of one of ``RAG_API_KEYS`` (open
when none is set); ``/stats`` takes any of those keys when ``RAG_API_KEYS`` is set, and so does
``/metrics`` unless ``RAG_METRICS_API_KEY`` is set: then it takes that key only. A tenant over its
request rate (``RAG_TENANT_RATE_PER_S``) gets a 429."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag.settings import Settings
from rag.tenant import Tenant
from rag.wiring import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def matching_key(given: str | None, keys: list[str]) -> int | None:
    """The index of the key equal to ``given``; each comparison takes constant time."""
    if not given:
        return None
    return next(
        (i for i, key in enumerate(keys) if secrets.compare_digest(given.encode(), key.encode())),
        None,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    key = settings.admin_api_key.get_secret_value()
    given = credentials.credentials if credentials else None
    if key and matching_key(given, [key]) is None:
        raise _unauthorized("admin endpoints need 'Authorization: Bearer <RAG_ADMIN_API_KEY>'")


def _api_keys(request: Request) -> list[tuple[str, str]]:
    """(key, tenant name) of every ``RAG_API_KEYS`` entry, parsed once at start-up."""
    return request.app.state.key_tenants  # type: ignore[no-any-return]


def _bearer_key(request: Request) -> str:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


async def get_tenant(request: Request) -> Tenant:
    """Whom /ask serves. With RAG_API_KEYS set, the tenant of the bearer key (or 401); without,
    the one open tenant. Reads the header itself: one dependency on the cached path, not three.
    Each request takes one of the tenant's tokens when its rate is limited (or 429)."""
    tenant = _tenant_of(request)
    if tenant.rate is not None:
        tenant.rate.take()
    return tenant


def _tenant_of(request: Request) -> Tenant:
    if not _api_keys(request):
        return request.app.state.services.default  # type: ignore[no-any-return]
    tenant = _keyed_tenant(request)
    if tenant is None:
        raise _unauthorized(
            "this service needs 'Authorization: Bearer <API key>' (one of RAG_API_KEYS)"
        )
    return tenant


def _keyed_tenant(request: Request) -> Tenant | None:
    """The tenant of the request's bearer key, if it is one of RAG_API_KEYS."""
    key_tenants = _api_keys(request)
    found = matching_key(_bearer_key(request), [key for key, _ in key_tenants])
    if found is None:
        return None
    services: Services = request.app.state.services
    return services.tenants[key_tenants[found][1]]


def own_tenants(request: Request) -> list[Tenant] | None:
    """The tenant whose key the request carries, as a list; None (all of them) for any other
    key (the admin's) or when /ask is open."""
    tenant = _keyed_tenant(request)
    return None if tenant is None else [tenant]


async def require_reader(request: Request, settings: SettingsDep) -> None:
    """With RAG_API_KEYS set, the service's counters are not public: any tenant key or the
    admin key reads them."""
    key_tenants = _api_keys(request)
    if not key_tenants:
        return
    keys = [key for key, _ in key_tenants]
    if admin := settings.admin_api_key.get_secret_value():
        keys.append(admin)
    if matching_key(_bearer_key(request), keys) is None:
        raise _unauthorized(
            "with RAG_API_KEYS set, this needs 'Authorization: Bearer <key>' "
            "(one of RAG_API_KEYS, or RAG_ADMIN_API_KEY)"
        )


async def require_scraper(request: Request, settings: SettingsDep) -> None:
    """``/metrics``: with RAG_METRICS_API_KEY set, that key only; otherwise as ``/stats``."""
    key = settings.metrics_api_key.get_secret_value()
    if not key:
        await require_reader(request, settings)
    elif matching_key(_bearer_key(request), [key]) is None:
        raise _unauthorized("/metrics needs 'Authorization: Bearer <RAG_METRICS_API_KEY>'")


TenantDep = Annotated[Tenant, Depends(get_tenant)]
AdminDep = Annotated[None, Depends(require_admin)]
ReaderDep = Annotated[None, Depends(require_reader)]
ScraperDep = Annotated[None, Depends(require_scraper)]

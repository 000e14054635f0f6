"""How errors become responses: each ``RagError`` kind has one HTTP status, and validation
errors are made JSON-safe before they are echoed back."""

from __future__ import annotations

import math
from typing import Any

from fastapi import status
from fastapi.encoders import jsonable_encoder

from rag.errors import (
    CacheUnavailableError,
    ConflictError,
    FlightFailedError,
    FlightTimeoutError,
    InvalidInputError,
    LLMError,
    LLMRateLimitError,
    LLMTimeoutError,
    NotFoundError,
    OverloadedError,
    RagError,
    RateLimitedError,
    RetrievalError,
)

_ERROR_STATUS: list[tuple[type[RagError], int]] = [
    (InvalidInputError, status.HTTP_400_BAD_REQUEST),
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (LLMTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (FlightTimeoutError, status.HTTP_504_GATEWAY_TIMEOUT),
    (FlightFailedError, status.HTTP_502_BAD_GATEWAY),
    (LLMRateLimitError, status.HTTP_429_TOO_MANY_REQUESTS),
    (LLMError, status.HTTP_502_BAD_GATEWAY),
    (RetrievalError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (CacheUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (OverloadedError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (RateLimitedError, status.HTTP_429_TOO_MANY_REQUESTS),
]


def http_status_for(exc: RagError) -> int:
    """The status of a library error (the most specific kind listed wins); 500 otherwise."""
    return next((code for kind, code in _ERROR_STATUS if isinstance(exc, kind)), 500)


# A 503 because Redis is away (the session store, an admin's invalidation): the gateway tries
# Redis again after its breaker's one-second window.
CACHE_RETRY_AFTER_S = 1


def headers_for(exc: RagError) -> dict[str, str]:
    """``Retry-After`` when the service sheds load, a tenant is over its rate, or Redis is away:
    clients may come back, and when."""
    if isinstance(exc, OverloadedError | RateLimitedError):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, CacheUnavailableError):
        return {"Retry-After": str(CACHE_RETRY_AFTER_S)}
    return {}


def json_safe(value: Any) -> Any:
    """``value`` with whatever strict JSON cannot carry replaced by readable text: NaN and
    infinities by ``"nan"``/``"inf"``, lone surrogates (``"\\ud800"`` in the request) by their
    escape, exceptions by their message. A validation error echoes the rejected input, and the
    input that fails validation is exactly the kind of value JSON cannot encode."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, BaseException):
        return json_safe(str(value))
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return json_safe(jsonable_encoder(value))

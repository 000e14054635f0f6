"""Errors raised by the library. The service maps each to one HTTP status.

    RagError
    ├── InvalidInputError        bad request data (400/422): empty query, unsupported file type
    ├── UpstreamError            a stage the service depends on failed
    │   ├── LLMError             the LLM answered with an error (502)
    │   │   ├── LLMTimeoutError  no answer in time (504)
    │   │   └── LLMRateLimitError the LLM provider throttles us (429)
    │   ├── RetrievalError       the vector DB failed (503)
    │   ├── CacheUnavailableError an invalidation could not reach the cache store (503)
    │   ├── FlightFailedError    the identical request this one waited for failed (502)
    │   ├── FlightTimeoutError   waited too long for an identical request in flight (504)
    │   └── OverloadedError      too many generations running and waiting: shed (503)
    ├── NotFoundError            no such thing (404)
    │   ├── DocumentNotFoundError  no such document
    │   └── RequestNotFoundError   no such request id (for this key)
    ├── ConflictError            already done, once only (409): a second verdict on an answer
    └── ConfigurationError       a setting names something unusable (at start-up)

Cache-store failures are not errors: the cache fails open (see ``rag.cache.gateway``). Each kind
also names what it counts as in the ``rag_errors_total{kind}`` metric (``kind``).
"""

from __future__ import annotations

from typing import ClassVar


class RagError(Exception):
    """Base of every error this library raises on purpose."""

    kind: ClassVar[str] = "other"  # its label in rag_errors_total{kind}


class InvalidInputError(RagError):
    """The caller sent something we cannot use; the message says what."""

    kind = "invalid_input"


class InvalidFieldError(InvalidInputError):
    """One field of a request is out of its bounds (a validation error, as the request model's
    own are): ``field`` names it, ``value`` is what was sent."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class NotFoundError(RagError):
    """What the request names does not exist (for this caller)."""

    kind = "not_found"


class DocumentNotFoundError(NotFoundError):
    """The document id is not in the corpus."""


class RequestNotFoundError(NotFoundError):
    """The request id was not issued to this key, or is older than the answers it can concern."""


class ConflictError(RagError):
    """The request repeats something that is taken once only."""

    kind = "conflict"


class ConfigurationError(RagError):
    """A setting names something that cannot be used, e.g. a semantic verifier weight file of
    another kind than ``semantic_verifier``; raised where it is loaded, at start-up."""


class UpstreamError(RagError):
    """A dependency (LLM, vector DB) failed; nothing was cached."""


class LLMError(UpstreamError):
    """The LLM call failed or returned an unusable answer."""

    kind = "llm"


class LLMTimeoutError(LLMError):
    """The LLM did not answer within the configured timeout."""


class LLMRateLimitError(LLMError):
    """The LLM provider rate-limited the request."""


class RetrievalError(UpstreamError):
    """The vector database could not be queried or written."""

    kind = "vector_db"


class CacheUnavailableError(UpstreamError):
    """An explicit cache operation (invalidation) could not reach the cache store."""

    kind = "cache_unavailable"


class FlightFailedError(UpstreamError):
    """The identical request this one waited for failed; its message is passed on."""

    kind = "llm"


class FlightTimeoutError(UpstreamError):
    """Waited too long for an identical request in flight."""

    kind = "llm"


class OverloadedError(UpstreamError):
    """Too many LLM generations are running and waiting; try again after ``retry_after_s``."""

    kind = "shed"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimitedError(RagError):
    """One tenant asked more often than its rate allows; try again after ``retry_after_s``."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def error_kinds() -> list[str]:
    """Every ``kind`` an error of this tree counts as (once each)."""
    classes: list[type[RagError]] = [RagError]
    kinds: dict[str, None] = {}
    while classes:
        cls = classes.pop(0)
        kinds[cls.kind] = None
        classes += cls.__subclasses__()
    return list(kinds)

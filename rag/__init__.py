"""A RAG library whose embedding, search and generation stages are each cached in Redis."""

from rag.corpus import open_corpus
from rag.errors import (
    DocumentNotFoundError,
    InvalidInputError,
    LLMError,
    LLMRateLimitError,
    LLMTimeoutError,
    RagError,
    RetrievalError,
    UpstreamError,
)
from rag.pipeline import RagPipeline
from rag.settings import Settings
from rag.types import Answer, CacheMode, CacheStatus
from rag.wiring import open_services

__all__ = [
    "Answer",
    "CacheMode",
    "CacheStatus",
    "DocumentNotFoundError",
    "InvalidInputError",
    "LLMError",
    "LLMRateLimitError",
    "LLMTimeoutError",
    "RagError",
    "RagPipeline",
    "RetrievalError",
    "Settings",
    "UpstreamError",
    "open_corpus",
    "open_services",
]

"""Request and response bodies, as DESIGN.md fixes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag.types import Answer, CacheMode, ScoredChunk, SemanticInfo


class CacheOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: CacheMode = CacheMode.DEFAULT
    semantic: bool | None = Field(
        default=None,
        description="Consult the semantic cache after an exact miss "
        "(default: RAG_SEMANTIC_ENABLED).",
    )
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Cosine threshold of the semantic cache."
    )


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="The question.")
    top_k: int | None = Field(default=None, ge=1, description="How many chunks to retrieve.")
    cache: CacheOptions = Field(default_factory=CacheOptions)


class SourcePublic(BaseModel):
    doc_id: str
    chunk_id: str
    score: float
    text: str

    @classmethod
    def of(cls, hit: ScoredChunk) -> SourcePublic:
        return cls(
            doc_id=hit.chunk.doc_id,
            chunk_id=hit.chunk.chunk_id,
            score=hit.score,
            text=hit.chunk.text,
        )


class SemanticPublic(BaseModel):
    similarity: float
    matched_query: str

    @classmethod
    def of(cls, info: SemanticInfo) -> SemanticPublic:
        return cls(similarity=info.similarity, matched_query=info.matched_query)


class CacheStatusesPublic(BaseModel):
    embedding: str
    search: str
    llm: str


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class AskResponse(BaseModel):
    answer: str
    sources: list[SourcePublic]
    cache: CacheStatusesPublic
    usage: UsagePublic = Field(
        description="Tokens spent by this request (0 when served from cache)."
    )
    timings_ms: dict[str, float]
    semantic: SemanticPublic | None = Field(
        default=None, description="On a semantic hit: the similarity and the question matched."
    )

    @classmethod
    def of(cls, answer: Answer) -> AskResponse:
        return cls(
            answer=answer.text,
            sources=[SourcePublic.of(s) for s in answer.sources],
            cache=CacheStatusesPublic(**answer.cache.as_dict()),
            usage=UsagePublic(
                prompt_tokens=answer.usage.prompt_tokens,
                completion_tokens=answer.usage.completion_tokens,
            ),
            timings_ms=answer.timings_ms,
            semantic=SemanticPublic.of(answer.semantic) if answer.semantic else None,
        )


class DocumentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    source: str | None = None


class DocumentPublic(BaseModel):
    doc_id: str
    chunks: int
    replaced_chunks: int
    corpus_version: str


class DocumentDeleted(BaseModel):
    doc_id: str
    deleted_chunks: int


class CacheInvalidate(BaseModel):
    """Exactly one of ``layer``, ``tag`` or ``all``."""

    model_config = ConfigDict(extra="forbid")

    layer: Literal["embedding", "search", "llm", "semantic"] | None = Field(
        default=None, description="Delete every entry of this layer (in this namespace)."
    )
    tag: str | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="Delete exactly the entries with this tag, e.g. 'doc:<doc_id>' for the "
        "answers (exact and semantic) built on that document.",
    )
    all: bool = Field(default=False, description="Delete every entry of every layer.")

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheInvalidate:
        if sum((self.layer is not None, self.tag is not None, self.all)) != 1:
            raise ValueError("give exactly one of 'layer', 'tag' or 'all': true")
        return self


class CacheInvalidated(BaseModel):
    deleted: int = Field(description="How many keys were deleted.")

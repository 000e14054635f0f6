"""Request and response bodies, as DESIGN.md fixes them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rag.sessions import SESSION_ID, SessionView, TurnPlan
from rag.types import Answer, CacheMode, ScoredChunk, SemanticInfo

SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_ID.pattern,
        description="A conversation: 1 to 128 letters, digits, '.', '_' or '-'.",
    ),
]


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
    session_id: SessionId | None = Field(
        default=None,
        description="Ask within a conversation: a follow-up is rewritten into a standalone "
        "question (using the session's history) before retrieval and caching.",
    )


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
    session_id: str | None = None
    standalone_query: str | None = Field(
        default=None,
        description="With a session_id: the standalone question that was answered and cached.",
    )

    @classmethod
    def of(cls, answer: Answer, turn: TurnPlan | None = None) -> AskResponse:
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
            session_id=turn.session_id if turn else None,
            standalone_query=turn.standalone if turn else None,
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


class TurnPublic(BaseModel):
    question: str
    standalone_query: str
    answer: str
    tokens: int


class SessionPublic(BaseModel):
    session_id: str
    turns: list[TurnPublic]
    history_tokens: int = Field(description="Tokens of the turns kept (the history budget).")
    ttl_s: int = Field(description="Seconds until the session expires if no turn comes.")

    @classmethod
    def of(cls, view: SessionView) -> SessionPublic:
        return cls(
            session_id=view.session_id,
            turns=[
                TurnPublic(
                    question=t.question,
                    standalone_query=t.standalone,
                    answer=t.answer,
                    tokens=t.tokens,
                )
                for t in view.turns
            ],
            history_tokens=sum(t.tokens for t in view.turns),
            ttl_s=view.ttl_s,
        )


class SessionDeleted(BaseModel):
    session_id: str
    deleted: bool

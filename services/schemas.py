"""Request and response bodies, as the README's endpoint table fixes them (the fixed interface).

Numbers and flags in JSON bodies are strict (``"top_k": "4"`` or ``true`` is refused, not read
as 4); floats must be finite. Every string refuses lone surrogates (``"\\ud800"``, valid JSON
but no text). The layer names come from
``rag.cache.layers``."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from rag.cache.layers import INVALIDATION_TARGETS, REPORTED
from rag.sessions import SESSION_ID, SessionView, TurnPlan
from rag.types import Answer, CacheMode, CacheStatus, ScoredChunk, SemanticInfo


# Letters that draw nothing although Unicode files them as letters or marks (Hangul fillers,
# the combining grapheme joiner); format characters (U+200B, U+FEFF, U+2060…) are found by
# their category.
def _no_lone_surrogates(value: object) -> object:
    if not isinstance(value, str):
        return value  # the type check that follows refuses it
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        escape = f"\\u{ord(value[exc.start]):04x}"
        raise ValueError(
            f"text must be valid Unicode: a lone surrogate ({escape}, half of a UTF-16 pair) at "
            f"character {exc.start}"
        ) from None
    return value


Text = Annotated[str, BeforeValidator(_no_lone_surrogates)]
# A query with no visible character is refused by the pipeline's own check (400, like the CLI).
QueryText = Annotated[Text, Field(min_length=1, description="The question.")]


# JSON bodies are strict (no "4" for 4, no true for 1); query strings are text, read leniently.
def _top_k(*, strict: bool) -> Any:
    return Field(ge=1, strict=strict, description="How many chunks to retrieve.")


def _threshold(*, strict: bool) -> Any:
    return Field(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        strict=strict,
        description="Cosine threshold of the semantic cache for this request (in auto mode "
        "hits are served at the measured threshold or this, whichever is higher).",
    )


def _semantic(*, strict: bool) -> Any:
    return Field(
        strict=strict,
        description="false: never consult the semantic cache for this request; true or unset: "
        "as RAG_SEMANTIC_MODE says (true is a 400 when it is off).",
    )


SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_ID.pattern,
        description="A conversation: 1 to 128 letters, digits, '.', '_' or '-'.",
    ),
]
SESSION_ID_DESCRIPTION = (
    "Ask within a conversation: a follow-up is rewritten into a standalone question (using the "
    "session's history) before retrieval and caching."
)


class CacheOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: CacheMode = CacheMode.DEFAULT
    semantic: Annotated[bool, _semantic(strict=True)] | None = None
    threshold: Annotated[float, _threshold(strict=True)] | None = None


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    top_k: Annotated[int, _top_k(strict=True)] | None = None
    cache: CacheOptions = Field(default_factory=CacheOptions)
    session_id: SessionId | None = Field(default=None, description=SESSION_ID_DESCRIPTION)


class AskQuery(BaseModel):
    """``GET /ask/stream``'s query parameters: ``AskRequest`` with ``cache`` flattened. Query
    strings are text, so numbers and flags are parsed from it (``top_k=4``, ``semantic=true``)."""

    query: QueryText
    top_k: Annotated[int, _top_k(strict=False)] | None = None
    mode: CacheMode = CacheMode.DEFAULT
    semantic: Annotated[bool, _semantic(strict=False)] | None = None
    threshold: Annotated[float, _threshold(strict=False)] | None = None
    session_id: SessionId | None = Field(default=None, description=SESSION_ID_DESCRIPTION)

    def as_request(self) -> AskRequest:
        return AskRequest(
            query=self.query,
            top_k=self.top_k,
            cache=CacheOptions(mode=self.mode, semantic=self.semantic, threshold=self.threshold),
            session_id=self.session_id,
        )


class SourcePublic(BaseModel):
    doc_id: str
    chunk_id: str
    score: float
    text: str

    @classmethod
    def of(cls, hit: ScoredChunk) -> SourcePublic:
        """Built without validation: the values are the library's own, and a cached answer's
        response builds four of these on every hit."""
        return cls.model_construct(
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


def _reported_layers(statuses: dict[str, CacheStatus]) -> dict[str, CacheStatus]:
    if list(statuses) != [layer.name for layer in REPORTED]:
        raise ValueError(f"cache statuses must be given for {[layer.name for layer in REPORTED]}")
    return statuses


# What each layer of rag.cache.layers.REPORTED did for the request ("semantic" only where the
# semantic cache can serve the layer).
CacheStatusesPublic = Annotated[
    dict[str, CacheStatus],
    AfterValidator(_reported_layers),
    WithJsonSchema(
        {
            "title": "CacheStatuses",
            "type": "object",
            "properties": {
                layer.name: {"type": "string", "enum": [s.value for s in layer.statuses]}
                for layer in REPORTED
            },
            "required": [layer.name for layer in REPORTED],
            "additionalProperties": False,
        }
    ),
]


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
    request_id: str = Field(
        description="Names this answer in POST /feedback (valid as long as the answer can be "
        "cached)."
    )

    @classmethod
    def of(cls, answer: Answer, turn: TurnPlan | None = None) -> AskResponse:
        """The response as its model, built without validation (``model_construct``): every
        value comes from the library's own types. ``POST /ask`` sends the same body serialized
        by ``ask_response_json``, which a test holds to this."""
        return cls.model_construct(
            answer=answer.text,
            sources=[SourcePublic.of(s) for s in answer.sources],
            cache=dict(answer.cache),
            usage=UsagePublic.model_construct(
                prompt_tokens=answer.usage.prompt_tokens,
                completion_tokens=answer.usage.completion_tokens,
            ),
            timings_ms=answer.timings_ms,
            semantic=SemanticPublic.of(answer.semantic) if answer.semantic else None,
            session_id=turn.session_id if turn else None,
            standalone_query=turn.standalone if turn else None,
            request_id=answer.request_id,
        )


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Text = Field(min_length=1, max_length=2000)
    correct: StrictBool


class FeedbackPublic(BaseModel):
    request_id: str
    correct: bool
    outcome: str = Field(description="What the verdict did, in words.")


class DocumentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc_id: Text = Field(min_length=1, max_length=200)
    text: Text = Field(min_length=1)
    source: Text | None = None


class DocumentPublic(BaseModel):
    doc_id: str
    chunks: int
    replaced_chunks: int
    corpus_version: str


class DocumentDeleted(BaseModel):
    doc_id: str
    deleted_chunks: int


def _invalidation_target(name: str) -> str:
    if name not in INVALIDATION_TARGETS:
        raise ValueError(f"layer must be one of: {', '.join(INVALIDATION_TARGETS)}")
    return name


InvalidationLayer = Annotated[
    str,
    AfterValidator(_invalidation_target),
    Field(json_schema_extra={"enum": list(INVALIDATION_TARGETS)}),
]


class CacheInvalidate(BaseModel):
    """Exactly one of ``layer``, ``tag`` or ``all``."""

    model_config = ConfigDict(extra="forbid")

    layer: InvalidationLayer | None = Field(
        default=None, description="Delete every entry of this layer (in every namespace)."
    )
    tag: Text | None = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="Delete exactly the entries with this tag, e.g. 'doc:<doc_id>' for the "
        "answers (exact and semantic) built on that document.",
    )
    all: bool = Field(default=False, strict=True, description="Delete every entry of every layer.")

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


def ask_response_json(answer: Answer, turn: TurnPlan | None = None) -> bytes:
    """The body of ``AskResponse.of(answer, turn)``, serialized without building the response
    model: a cached answer's sources (four chunk texts) are serialized once per search result and
    then spliced in. Same fields, same order, same values (a test holds it to ``AskResponse``)."""
    rest = {
        "cache": answer.cache.as_dict(),
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
        },
        "timings_ms": answer.timings_ms,
        "semantic": SemanticPublic.of(answer.semantic).model_dump() if answer.semantic else None,
        "session_id": turn.session_id if turn else None,
        "standalone_query": turn.standalone if turn else None,
        "request_id": answer.request_id,
    }
    sources = _sources_json(tuple(answer.sources))
    return b'{"answer":' + _json(answer.text) + b',"sources":' + sources + b"," + _json(rest)[1:]


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=4096)
def _sources_json(sources: tuple[ScoredChunk, ...]) -> bytes:
    return _json([SourcePublic.of(s).model_dump() for s in sources])

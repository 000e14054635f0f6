"""One request as the client saw it, read from the service's ``/ask`` response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from rag.cache.layers.search import decode_hits
from rag.prompt import build_messages
from rag_bench.pricing import TokenCounter
from rag_bench.workload import Query


@dataclass(slots=True)
class Record:
    """One request as the client saw it."""

    index: int
    query: str
    group: str | None
    kind: str
    status_code: int
    latency_ms: float
    path: str = "error"  # miss | exact | semantic | error
    cache: dict[str, str] = field(default_factory=dict)
    generated: bool = False  # this request ran the LLM (usage > 0)
    usage_prompt: int = 0  # as the service reported (the served model's tokenizer)
    usage_completion: int = 0
    prompt_tokens: int = 0  # tiktoken, the prompt this answer was generated from
    completion_tokens: int = 0  # tiktoken, the answer
    query_tokens: int = 0  # tiktoken, for the embedding price
    lookup_ms: float = 0.0  # time on cache lookups (exact and semantic), server-side
    matched_query: str | None = None
    similarity: float | None = None
    error: str | None = None

    @property
    def embedded(self) -> bool:
        return self.cache.get("embedding") in ("miss", "bypass")


def failed_record(index: int, query: Query, ms: float, error: str) -> Record:
    """A request that got no response at all."""
    return Record(index, query.text, query.group, query.kind, 0, ms, error=error)


def record_from_response(
    index: int, query: Query, response: httpx.Response, ms: float, tokens: TokenCounter
) -> Record:
    record = Record(
        index=index,
        query=query.text,
        group=query.group,
        kind=query.kind,
        status_code=response.status_code,
        latency_ms=ms,
        query_tokens=tokens.query(query.text),
    )
    if response.status_code != 200:
        record.error = response.text[:200]
        return record
    _read_body(record, query, response.json(), tokens)
    return record


def _read_body(record: Record, query: Query, body: dict[str, Any], tokens: TokenCounter) -> None:
    record.cache = body["cache"]
    llm = record.cache["llm"]
    record.path = "exact" if llm == "hit" else "semantic" if llm == "semantic" else "miss"
    record.usage_prompt = int(body["usage"]["prompt_tokens"])
    record.usage_completion = int(body["usage"]["completion_tokens"])
    record.generated = record.usage_prompt + record.usage_completion > 0
    # The public sources carry no source name nor content hash; neither is in the prompt.
    sources = decode_hits([{"source": "", "hash": "", **s} for s in body["sources"]])
    record.prompt_tokens = tokens.prompt(build_messages(query.text, sources))
    record.completion_tokens = tokens.text(body["answer"])
    timings = body.get("timings_ms", {})
    record.lookup_ms = float(timings.get("cache_lookup", 0.0)) + float(
        timings.get("semantic_lookup", 0.0)
    )
    if body.get("semantic"):
        record.matched_query = body["semantic"]["matched_query"]
        record.similarity = body["semantic"]["similarity"]

"""The semantic cache: serves the answer of an earlier *similar* question, never a wrong one.

Redis is the source of truth: one entry per (scope, normalized query) holding the query, its
vector, the sources and the key of its answer in the exact answer cache, with the answer layer's
TTL. Lookups use an in-process ``SemanticIndex``, kept in sync across app processes by pub/sub:
each process publishes what it adds or deletes; a process (re)subscribing clears its copy and
reloads it from Redis, since messages missed while disconnected are lost. Expired entries leave
the index by their recorded expiry time; a candidate whose Redis entry or answer is gone is a
miss and is dropped.

A scope is everything an answer depends on besides the question: embedding model, LLM model,
prompt-template version, sampling parameters and corpus version (the namespace is in the key
prefix). Entries are only ever compared within one scope."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.cache.codec import CorruptEntryError, decode_json, encode_json
from rag.cache.gateway import RedisGateway
from rag.cache.keys import (
    digest,
    layer_pattern,
    semantic_events_channel,
    semantic_key,
    semantic_veto_key,
)
from rag.cache.layers import SEMANTIC_SEGMENT, AnswerLayer
from rag.cache.layers.search import decode_hits, encode_hits
from rag.protocols import Vector
from rag.semantic.index import IndexEntry, SemanticIndex
from rag.semantic.rule import SemanticRule
from rag.types import Completion, ScoredChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    completion: Completion
    sources: list[ScoredChunk]
    similarity: float
    matched_query: str
    entry_key: str  # the semantic entry that matched


def _b64(vector: Vector) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, "<f4").tobytes()).decode()


class SemanticCache:
    def __init__(
        self,
        *,
        redis: RedisGateway,
        rule: SemanticRule,
        index: SemanticIndex,
        answers: AnswerLayer,
        embedding_model_id: str,
    ) -> None:
        self._store = redis
        self._namespace = namespace = answers.namespace
        self.rule = rule
        self.index = index
        self._answers = answers
        # everything an answer depends on besides the question and the corpus version
        self._scope_parts = {
            "embedding": embedding_model_id,
            "llm": answers.llm_model,
            "prompt": answers.prompt_version,
            "sampling": answers.sampling,
        }
        self._dimension = index.dimension
        self._ttl_s = answers.ttl_s  # an entry lives as long as the answer it points to
        self.channel = semantic_events_channel(namespace)
        self.synced = False

    def scope(self, corpus_version: str) -> str:
        return digest(self._scope_parts, corpus_version)[:16]

    @property
    def rule_scope(self) -> str:
        """What the rule's false-hit rate depends on (``rag.semantic.outcomes``): the scope's
        parts and the rule, without the corpus version."""
        return digest(self._scope_parts, self.rule.kind, self.rule.min_score)[:16]

    def veto_key(self, query: str, entry_key: str) -> str:
        """Where a user's "incorrect" on this link is kept (``rag.feedback`` sets it): looked up
        with the entry, so ``query`` no longer receives the answer of ``entry_key``."""
        return semantic_veto_key(self._namespace, query, entry_key)

    def _key(self, scope: str, query: str) -> str:
        return semantic_key(self._namespace, scope, query)

    # -- lookups -------------------------------------------------------------------------

    async def lookup(
        self, *, scope: str, query: str, vector: Vector, threshold: float | None = None
    ) -> SemanticMatch | None:
        cutoff = self.rule.threshold if threshold is None else threshold
        found = self.index.candidates(scope, vector, cutoff, limit=self.rule.candidates)
        if not found:
            return None
        pairs = [(entry.query, self.index.vector(entry)) for entry, _ in found]
        if self.rule.verifier.offload:  # a model forward pass: keep the loop free
            decisions = await asyncio.to_thread(
                self.rule.decide_many, query, vector, pairs, threshold=cutoff
            )
        else:
            decisions = self.rule.decide_many(query, vector, pairs, threshold=cutoff)
        ranked = sorted(
            ((d, entry) for d, (entry, _) in zip(decisions, found, strict=True) if d.hit),
            key=lambda hit: -(hit[0].score or 0.0),
        )
        for decision, entry in ranked:  # the verifier's surest hit first
            raw_entry, raw_answer, vetoed = await self._store.get_many(
                [entry.key, entry.answer_key, self.veto_key(query, entry.key)]
            )
            if vetoed is not None:  # a user said this answer is wrong for this question
                continue
            if raw_entry is None or raw_answer is None:  # expired, invalidated or evicted
                self.index.remove(entry.key)
                if raw_entry is not None:
                    await self._store.delete(entry.key)
                else:  # or a value of another type, which MGET reads as absent
                    await self._store.repair(entry.key)
                continue
            try:
                body = decode_json(raw_entry, "sem")
                sources = decode_hits(body["sources"])
                completion = self._answers.decode(raw_answer).value
            except (CorruptEntryError, KeyError, TypeError, ValueError) as exc:
                log.warning("dropping corrupt semantic entry %s: %s", entry.key, exc)
                self.index.remove(entry.key)
                await self._store.delete(entry.key)
                continue
            return SemanticMatch(
                completion=completion,
                sources=sources,
                similarity=decision.similarity,
                matched_query=entry.query,
                entry_key=entry.key,
            )
        return None

    # -- writes --------------------------------------------------------------------------

    async def add(
        self,
        *,
        scope: str,
        query: str,
        vector: Vector,
        answer_key: str,
        sources: list[ScoredChunk],
    ) -> str:
        """Store the entry, index it and announce it; return its key."""
        key = self._key(scope, query)
        entry = IndexEntry(
            key=key,
            scope=scope,
            query=query,
            answer_key=answer_key,
            expires_at=time.time() + self._ttl_s,
        )
        body = {
            "scope": scope,
            "query": query,
            "vector": _b64(vector),
            "answer_key": answer_key,
            "expires_at": entry.expires_at,
            "sources": encode_hits(sources),
        }
        if not await self._store.set(key, encode_json("sem", body), self._ttl_s):
            return key
        self.index.add(entry, vector)
        event = {k: body[k] for k in ("scope", "query", "vector", "answer_key", "expires_at")}
        await self._store.publish(self.channel, json.dumps({"op": "add", "key": key, **event}))
        return key

    # -- keeping the index in sync -------------------------------------------------------

    def _apply(self, key: str, body: dict[str, Any]) -> None:
        vector = np.frombuffer(base64.b64decode(body["vector"]), dtype="<f4").astype(np.float32)
        if vector.shape != (self._dimension,):
            raise CorruptEntryError(f"semantic entry vector has shape {vector.shape}")
        entry = IndexEntry(
            key=key,
            scope=str(body["scope"]),
            query=str(body["query"]),
            answer_key=str(body["answer_key"]),
            expires_at=float(body["expires_at"]),
        )
        if entry.expires_at > time.time():
            self.index.add(entry, vector)

    def _on_message(self, data: bytes) -> None:
        try:
            event = json.loads(data)
            if event["op"] == "add":
                self._apply(event["key"], event)
            elif event["op"] == "del":
                self.index.remove(event["key"])
        except (CorruptEntryError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed semantic event: %s", exc)

    async def reload(self) -> int:
        """Replace the index with what Redis holds now."""
        self.index.clear()
        loaded = 0
        async for keys in self._store.scan(layer_pattern(self._namespace, SEMANTIC_SEGMENT)):
            for key, raw in zip(keys, await self._store.get_many(keys), strict=True):
                if raw is None:
                    continue
                try:
                    self._apply(key, decode_json(raw, "sem"))
                    loaded += 1
                except (CorruptEntryError, KeyError, TypeError, ValueError) as exc:
                    log.warning("dropping corrupt semantic entry %r: %s", key, exc)
                    await self._store.delete(key)
        return loaded

    async def run_sync(self, *, sweep_s: float = 5.0) -> None:
        """Follow other processes' changes until cancelled; survives Redis outages."""
        next_sweep = time.monotonic() + sweep_s

        async def subscribed() -> None:
            loaded = await self.reload()  # after subscribing: nothing falls in between
            self.synced = True
            log.info("semantic index synced: %d entries", loaded)

        def lost(exc: BaseException) -> None:
            if self.synced:
                log.warning("semantic index lost its subscription (%r); clearing it", exc)
            self.synced = False
            self.index.clear()

        def tick() -> None:
            nonlocal next_sweep
            if time.monotonic() >= next_sweep:
                self.index.drop_expired()
                next_sweep = time.monotonic() + sweep_s

        await self._store.subscribe(
            self.channel, self._on_message, on_subscribed=subscribed, on_lost=lost, on_tick=tick
        )

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self.index),
            "max_entries": self.index.max_entries,
            "evictions": self.index.evictions,
            "synced": self.synced,
            "threshold": self.rule.threshold,
            "min_score": self.rule.min_score,
            "verifier": self.rule.kind,
        }

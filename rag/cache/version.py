"""The corpus version: a random token that changes whenever the corpus changes; search keys (and
through them answer and semantic scopes) contain it."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from rag.cache.keys import corpus_version_key
from rag.protocols import KVStore

log = logging.getLogger(__name__)
_VERSION = re.compile(rb"[0-9a-f]{1,64}")


@dataclass(frozen=True, kw_only=True)
class CorpusVersion:
    """Random rather than a counter: if the key is ever lost (eviction, a Redis restart) a fresh
    token is drawn, which can only cause misses, never resurrect a stale entry. A value that is
    not such a token (garbage written by something else) is replaced by a fresh one, which again
    can only cause misses."""

    store: KVStore
    namespace: str
    collection: str
    ttl_s: int

    @property
    def key(self) -> str:
        return corpus_version_key(self.namespace, self.collection)

    async def resolve(self, raw: bytes | None) -> str | None:
        """The version from a fetched value, creating (or repairing) it if needed; None when the
        store cannot give one now (no search cache for this request). Only a value that is there
        and is not a token is replaced: a store that did not answer in time must not make
        every waiting request draw a new version (each would orphan the others' entries)."""
        if raw is not None and _VERSION.fullmatch(raw):
            return raw.decode()
        if raw is None:  # absent, or of another type (MGET reads those as absent)
            current = await self.store.set_if_absent(
                self.key, secrets.token_hex(8).encode(), self.ttl_s
            )
            if current is None:  # no answer from the store: try again with the next request
                return None
            if _VERSION.fullmatch(current):
                return current.decode()
        log.warning("corpus version at %s is not a version token; replacing it", self.key)
        version = secrets.token_hex(8)
        return version if await self.store.set(self.key, version.encode(), self.ttl_s) else None

    async def bump(self) -> str:
        version = secrets.token_hex(8)
        await self.store.set(self.key, version.encode(), self.ttl_s)
        return version

"""The corpus version: a random token that changes whenever the corpus changes. Search keys, and
through them answers and semantic scopes, contain it, so it decides whether a cached entry is
current; the cache is never the source of truth of its own validity.

It lives with the corpus: the vector store records it (``VersionStore``), written after the
points of a change and before the change is acknowledged. Every process holds the current token
in memory (``current``: no I/O on the request path), read at start and followed: re-read from the
vector store every ``poll_s`` and at once when another process announces a change over Redis
pub/sub. Redis only carries that announcement: a refused write, a restart or a rollback of Redis
cannot bring an old version back. Staleness bound: a process serves entries of the previous
version for at most ``poll_s`` (plus one read) after a change was acknowledged elsewhere, and not
at all in the process that made it.

Random rather than a counter: a version is never reused, so an entry written under an old one
can never become current again."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Protocol

from rag.cache.gateway import RedisGateway
from rag.cache.keys import corpus_version_channel
from rag.errors import RetrievalError

log = logging.getLogger(__name__)


class VersionStore(Protocol):
    """Where the corpus lives records its version (``QdrantRetriever``)."""

    async def read_version(self) -> str | None:
        """The recorded version, None if none was ever recorded; ``RetrievalError`` if the
        store cannot answer."""
        ...

    async def write_version(self, version: str) -> None:
        """Record ``version`` durably; ``RetrievalError`` if it was not recorded."""
        ...


class CorpusVersion:
    def __init__(
        self,
        *,
        store: VersionStore,
        redis: RedisGateway | None,
        namespace: str,
        collection: str,
        poll_s: float,
    ) -> None:
        self._store = store
        self._redis = redis  # None: no announcements, polling only
        self.channel = corpus_version_channel(namespace, collection)
        self._poll_s = poll_s
        self.current: str | None = None  # None: unknown (the vector store never answered)
        self._changed = asyncio.Event()

    async def start(self) -> str:
        """Read the recorded version, recording a first one for a new corpus."""
        version = await self._store.read_version()
        if version is None:
            version = secrets.token_hex(8)
            await self._store.write_version(version)
        self.current = version
        return version

    async def bump(self) -> str:
        """A new version, recorded in the vector store (``RetrievalError`` when it was not: the
        change must then not be acknowledged), current in this process at once and announced to
        the others."""
        version = secrets.token_hex(8)
        await self._store.write_version(version)
        self.current = version
        if self._redis is not None:
            await self._redis.publish(self.channel, version)  # best effort: they also poll
        return version

    async def follow(self) -> None:
        """Keep ``current`` equal to the recorded version until cancelled."""
        listener = (
            asyncio.create_task(self._redis.subscribe(self.channel, lambda _: self._changed.set()))
            if self._redis is not None
            else None
        )
        try:
            while True:
                try:
                    async with asyncio.timeout(self._poll_s):
                        await self._changed.wait()
                except TimeoutError:
                    pass
                self._changed.clear()
                await self.refresh()
        finally:
            if listener is not None:
                listener.cancel()

    async def refresh(self) -> None:
        """Read the recorded version now; on failure keep the last one known (a vector store
        that is down cannot have changed the corpus either)."""
        try:
            version = await self._store.read_version()
        except RetrievalError as exc:
            log.warning("could not read the corpus version: %s", exc)
            return
        if version is not None and version != self.current:
            log.info("corpus version %s -> %s", self.current, version)
            self.current = version

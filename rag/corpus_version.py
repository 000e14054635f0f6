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
can never become current again.

The same record makes a document change all or nothing (``CorpusState``): new chunks are written
*staged* under a new generation (invisible to search), and one write of the record makes them
current together with the new version (``switch``), hiding the chunks they supersede. Deleting
what was superseded comes after (``rag.ingest``), and the record is tidied once it is done
(``settle``). A process that reads the record sees the corpus whole, before or after a change.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rag.cache.gateway import RedisGateway
from rag.cache.keys import corpus_version_channel
from rag.errors import RetrievalError

log = logging.getLogger(__name__)


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class CorpusState:
    """What the vector store records about its corpus, in one record written in one step.

    ``revealed``: staged generations made current by a switch (generation -> doc_id) whose points
    are still marked staged; ``retired``: documents whose points other than one generation (the
    value; None: all of them) were superseded and are hidden until deleted. Both are empty once
    every change was collected."""

    version: str
    revealed: Mapping[str, str] = field(default_factory=dict)
    retired: Mapping[str, str | None] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "revealed": dict(self.revealed),
            "retired": dict(self.retired),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CorpusState:
        revealed, retired = payload.get("revealed") or {}, payload.get("retired") or {}
        return cls(
            version=str(payload["version"]),
            revealed={str(g): str(d) for g, d in revealed.items()},
            retired={str(d): (None if g is None else str(g)) for d, g in retired.items()},
        )


class VersionStore(Protocol):
    """Where the corpus lives records its state (``QdrantRetriever``)."""

    async def read_state(self) -> CorpusState | None:
        """The recorded state, None if none was ever recorded; ``RetrievalError`` if the
        store cannot answer."""
        ...

    async def write_state(self, state: CorpusState) -> None:
        """Record ``state`` durably, in one step; ``RetrievalError`` if it was not recorded."""
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
        self.state: CorpusState | None = None
        self._changed = asyncio.Event()
        self._writing = asyncio.Lock()  # one read-modify-write of the record at a time

    async def start(self) -> str:
        """Read the recorded state, recording a first one for a new corpus."""
        state = await self._store.read_state()
        if state is None:
            state = CorpusState(version=new_token())
            await self._store.write_state(state)
        self._adopt(state)
        return state.version

    async def bump(self) -> str:
        """A new version with nothing else changed (see ``switch``)."""
        return await self.switch()

    async def switch(
        self,
        *,
        reveal: Mapping[str, str] | None = None,
        retire: Mapping[str, str | None] | None = None,
    ) -> str:
        """Make staged generations current (``reveal``: generation -> doc_id) and hide what they
        supersede (``retire``: doc_id -> the generation it keeps, None for none), with a new
        version, in one write of the record. ``RetrievalError`` when it was not recorded: the
        change must then not be acknowledged. Current in this process at once and announced to
        the others."""
        async with self._writing:
            state = await self._recorded()
            state = CorpusState(
                version=new_token(),
                revealed={**state.revealed, **(reveal or {})},
                retired={**state.retired, **(retire or {})},
            )
            await self._store.write_state(state)
            self._adopt(state)
        if self._redis is not None:
            await self._redis.publish(self.channel, state.version)  # best effort: they also poll
        return state.version

    async def settle(self, collected: Mapping[str, str | None]) -> None:
        """Forget collected changes (``collected``: doc_id -> the generation kept; their
        superseded points are deleted and the kept ones no longer staged), in one write of the
        record, except where a later switch changed a document again. The version does not
        change: what search sees did not."""
        async with self._writing:
            state = await self._recorded()
            retired = state.retired
            done = {d for d, kept in collected.items() if d in retired and retired[d] == kept}
            if not done:
                return
            retired = {d: g for d, g in retired.items() if d not in done}
            revealed = {g: d for g, d in state.revealed.items() if d not in done}
            state = CorpusState(version=state.version, revealed=revealed, retired=retired)
            await self._store.write_state(state)
            if state.version == self.current:
                self._adopt(state)

    async def _recorded(self) -> CorpusState:
        """The record as stored now (another process may have changed it)."""
        return await self._store.read_state() or CorpusState(version="")

    def _adopt(self, state: CorpusState) -> None:
        self.state, self.current = state, state.version

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
            state = await self._store.read_state()
        except RetrievalError as exc:
            log.warning("could not read the corpus version: %s", exc)
            return
        if state is None:
            return
        if state.version != self.current:
            log.info("corpus version %s -> %s", self.current, state.version)
        self._adopt(state)

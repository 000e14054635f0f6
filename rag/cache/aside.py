"""Cache-aside, the one mechanism every layer is read and written through.

``CachedLayer.get_or_compute`` reads the entry (a value fetched earlier in a batch, or one GET),
decodes it (a value that does not decode is deleted and is a miss), and on a hit extends its TTL
when the layer slides, and refreshes it in the background when it is stale
(stale-while-revalidate, or picked early by XFetch). On a miss it computes the value once however
many identical requests want it (``SingleFlight``) and writes it with its TTL. Each lookup is
counted in ``rag_cache_requests_total{layer,result}``.

What differs between layers is their spec (``rag.cache.layers``): key, TTL, codec, freshness."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from rag.cache.codec import CorruptEntryError
from rag.cache.flight import SingleFlight
from rag.cache.layers import Cached, LayerSpec
from rag.metrics import Metrics
from rag.protocols import KVStore
from rag.types import CacheMode, CacheStatus

log = logging.getLogger(__name__)
S = TypeVar("S", bound=LayerSpec[Any])
V = TypeVar("V")
_MAX_REMEMBERED = 10_000  # slid or repaired keys kept in memory (short strings each)
_RECHECK_S = 60.0
UNFETCHED: Any = object()  # "not fetched yet", as opposed to fetched and absent (None)
Refresh = Callable[[], Awaitable[object]]


class Background:
    """Work a request starts and does not wait for: refreshes (at most one per key at a time in
    this process) and TTL extensions. Cancelled at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[str] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh_once(self, key: str, refresh: Callable[[], Awaitable[object]]) -> None:
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def run() -> None:
            try:
                await refresh()
            except Exception as exc:  # a background refresh must never take the app down
                log.warning("background refresh of %s failed: %r", key, exc)
            finally:
                self._refreshing.discard(key)

        self.spawn(run())

    async def settle(self) -> None:
        """Wait until the work started so far (and what it started) is done."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CachedLayer(Generic[S, V]):
    """One layer (``spec``) over one store: ``S`` is the spec's class, ``V`` its value type."""

    def __init__(
        self,
        *,
        spec: S,
        store: KVStore,
        metrics: Metrics,
        background: Background,
        flight: SingleFlight | None = None,
    ) -> None:
        self.spec = spec
        self.layer = spec.layer
        self._store = store
        self._metrics = metrics
        self._background = background
        self._flight = flight
        self._slid: OrderedDict[str, float] = OrderedDict()  # key -> when its TTL was extended
        self._checked: OrderedDict[str, float] = OrderedDict()  # key -> when it was repaired

    async def read(self, key: str, raw: bytes | None = UNFETCHED) -> Cached[V] | None:
        """The entry at ``key`` (``raw``: its value if already fetched), or None."""
        if raw is UNFETCHED:
            (raw,) = await self._store.get_many([key])
        if raw is None:
            return None
        try:
            found: Cached[V] = self.spec.decode(raw)
        except (CorruptEntryError, KeyError, TypeError, ValueError) as exc:
            log.warning("dropping corrupt cache entry %s: %s", key, exc)
            await self._store.delete(key)
            return None
        return found

    async def write(self, key: str, value: V, *, compute_s: float = 0.0) -> bool:
        """Whether the entry was written."""
        raw = self.spec.encode(value, compute_s=compute_s)
        return await self._store.set(key, raw, self.spec.ttl_s)

    def status(self, found: Cached[V] | None, *, count: bool = True) -> CacheStatus:
        """Hit, miss, or bypass when the store could not be read; counted unless the caller
        counts the final status itself."""
        if found is not None:
            status = CacheStatus.HIT
        else:
            status = CacheStatus.MISS if self._store.available else CacheStatus.BYPASS
        if count:
            self.record(status)
        return status

    def record(self, status: CacheStatus) -> None:
        self._metrics.record_cache(self.layer.name, status)

    async def lookup(
        self, key: str, raw: bytes | None, *, refresh: Refresh | None, count: bool = True
    ) -> tuple[Cached[V] | None, CacheStatus]:
        """Read ``key`` and say what the cache did; on a hit, slide its TTL and, when it is
        stale and ``refresh`` is given, refresh it in the background."""
        found = await self.read(key, raw)
        status = self.status(found, count=count)
        if found is not None:
            self._after_hit(key, found, raw, refresh)
        elif status is CacheStatus.MISS:
            self._after_miss(key)
        return found, status

    async def get_or_compute(
        self,
        key: str | None,
        compute: Callable[[], Awaitable[V]],
        *,
        mode: CacheMode,
        raw: bytes | None = UNFETCHED,
    ) -> tuple[V, CacheStatus]:
        """The value and what the cache did: read (unless ``mode`` says not to, or ``key`` is
        None: no cache for this request), else compute once and write (if ``mode`` writes)."""
        if key is None or not mode.reads:
            self.record(CacheStatus.BYPASS)
            value = await (self.compute(key, compute) if key and mode.writes else compute())
            return value, CacheStatus.BYPASS
        refresh = (lambda: self._compute_and_write(key, compute)) if mode.writes else None
        found, status = await self.lookup(key, raw, refresh=refresh)
        if found is not None:
            return found.value, status
        if not mode.writes:
            return await compute(), status
        return await self.compute(key, compute), status

    async def compute(self, key: str, compute: Callable[[], Awaitable[V]]) -> V:
        """``compute`` and write the result, once per key however many ask at the same time."""
        if self._flight is None:
            return await self._compute_and_write(key, compute)

        async def read_landed() -> V | None:
            found = await self.read(key)
            return found.value if found is not None else None

        return await self._flight.run(
            key, read_landed, lambda: self._compute_and_write(key, compute)
        )

    def _after_hit(
        self, key: str, found: Cached[V], raw: bytes | None, refresh: Refresh | None
    ) -> None:
        """Sliding TTL and stale-while-revalidate, both in the background."""
        if self.spec.sliding and isinstance(raw, bytes):
            self._slide(key, raw)
        if found.stale and refresh is not None:
            flight = self._flight
            if flight is None:
                self._background.refresh_once(key, refresh)
            else:
                self._background.refresh_once(key, lambda: flight.once_in_a_while(key, refresh))

    def _after_miss(self, key: str) -> None:
        """A key that reads as absent may hold a value of another type (MGET reads those as
        absent): have the store repair it in the background, at most once a minute per key, so
        a layer that is not written after this miss (an embedding whose search hit) does not
        miss on it forever."""
        now = time.monotonic()
        if now - self._checked.get(key, -math.inf) < _RECHECK_S:
            return
        _remember(self._checked, key, now)
        self._background.spawn(self._store.repair(key))

    async def _compute_and_write(self, key: str, compute: Callable[[], Awaitable[V]]) -> V:
        started = time.perf_counter()
        value = await compute()
        await self.write(key, value, compute_s=time.perf_counter() - started)
        return value

    def _slide(self, key: str, raw: bytes) -> None:
        """At most once per tenth of the TTL per key, so hot keys do not cost a write per read."""
        now = time.monotonic()
        ttl = self.spec.ttl_s
        if now - self._slid.get(key, -math.inf) < ttl / 10:
            return
        _remember(self._slid, key, now)
        self._background.spawn(self._store.set(key, raw, ttl))


def _remember(seen: OrderedDict[str, float], key: str, when: float) -> None:
    """Record ``key`` as most recent, forgetting the oldest past ``_MAX_REMEMBERED``."""
    seen[key] = when
    seen.move_to_end(key)
    if len(seen) > _MAX_REMEMBERED:
        seen.popitem(last=False)

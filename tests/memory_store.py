"""``MemoryStore``: the ``KVStore`` contract in process memory, for unit tests and for trying the
cache logic without Redis. It keeps the same rules as ``RedisGateway`` (every write has a positive
TTL; an unreachable store reads as misses and drops writes) and can be switched *down* to play an
outage. Not for production: nothing is shared between processes and nothing bounds its size."""

from __future__ import annotations

import time
from collections.abc import Sequence


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}  # key -> (value, monotonic expiry)
        self.down = False  # play an outage: reads miss, writes are dropped
        self.round_trips = 0

    @property
    def available(self) -> bool:
        return not self.down

    def _live(self, key: str) -> bytes | None:
        found = self._data.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._data[key]
            return None
        return found[0]

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires, or None when absent (for tests)."""
        if self._live(key) is None:
            return None
        return self._data[key][1] - time.monotonic()

    def live_keys(self) -> list[str]:
        return [key for key in list(self._data) if self._live(key) is not None]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.round_trips += 1
        if self.down:
            return [None] * len(keys)
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        if ttl_s <= 0:
            raise ValueError("every cache write needs a positive TTL")
        self.round_trips += 1
        if self.down:
            return False
        self._data[key] = (bytes(value), time.monotonic() + ttl_s)
        return True

    async def repair(self, key: str) -> None:
        self.round_trips += 1  # values here are always bytes: nothing to repair

    async def delete(self, *keys: str) -> int:
        self.round_trips += 1
        if self.down:
            return 0
        present = [key for key in keys if self._live(key) is not None]
        for key in present:
            del self._data[key]
        return len(present)

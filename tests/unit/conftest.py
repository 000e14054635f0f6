"""The pipeline's unit suite runs on each cache backend: the in-memory store and the embedded
Valkey behind the production ``RedisGateway`` (one suite, parametrized by backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from tests.memory_store import MemoryStore
from tests.unit.fakes import Rig, make_rig

MakeRig = Callable[..., Rig]


@pytest.fixture(params=["memory", "valkey"])
async def rig_factory(request: pytest.FixtureRequest) -> AsyncIterator[MakeRig]:
    """``make_rig`` over a fresh store of the parametrized backend; rigs are closed after."""
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        if request.param == "memory":
            store: MemoryStore | RedisGateway = MemoryStore()
        else:
            url = request.getfixturevalue("valkey_url")  # the session's embedded Valkey
            client = aioredis.Redis.from_url(url)
            store = RedisGateway(client=client, timeout_s=1.0, retry_after_s=0.5)
        made.append(rig := make_rig(store, **options))
        return rig

    yield make
    for rig in made:
        await rig.aclose()

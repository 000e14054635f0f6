"""Price table accounting and the start-up warning about unbounded Redis memory."""

from __future__ import annotations

import logging

import pytest
import redis
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.corpus import warn_if_unbounded
from rag.prices import ModelPrice, load_price
from rag.types import Usage
from tests.conftest import LOCAL_REDIS_URL


def test_listed_models_are_priced_per_million_tokens() -> None:
    price = load_price("gpt-4o-mini")
    assert price == ModelPrice(model="gpt-4o-mini", input=0.15, output=0.60)
    assert price.cost(Usage(prompt_tokens=1_000_000, completion_tokens=500_000)) == pytest.approx(
        0.45
    )


def test_an_unlisted_model_counts_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        price = load_price("no-such-model")
    assert price.cost(Usage(1000, 1000)) == 0.0
    assert "no price for 'no-such-model'" in caplog.text


async def test_embedded_valkey_is_bounded(
    valkey_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(valkey_url)
    with caplog.at_level(logging.WARNING):
        await warn_if_unbounded(RedisGateway(client=client, timeout_s=1.0))
    await client.aclose()
    assert "grow without bound" not in caplog.text


async def test_an_unbounded_redis_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    try:
        config = redis.Redis.from_url(LOCAL_REDIS_URL, socket_connect_timeout=0.5).config_get(
            "maxmemory*"
        )
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    if config["maxmemory"] != "0" or config["maxmemory-policy"] != "noeviction":
        pytest.skip("the local Redis is bounded")
    client = aioredis.Redis.from_url(LOCAL_REDIS_URL)
    with caplog.at_level(logging.WARNING):
        await warn_if_unbounded(RedisGateway(client=client, timeout_s=1.0))
    await client.aclose()
    assert "grow without bound" in caplog.text

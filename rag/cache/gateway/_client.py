"""The Redis client and what the gateway's policy is made of: ``connect`` (the one place a
client is built), the errors that mean "Redis failed", the circuit breaker, the Lua scripts.
Private to ``rag.cache.gateway``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rag.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
RedisClient: TypeAlias = aioredis.Redis | RedisCluster
Op = Callable[[RedisClient], Awaitable[T]]
StreamBatches = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

# What an unreachable or failing Redis raises. A cluster client raises RedisClusterException (not
# a RedisError) when it cannot reach any node or a slot is not covered.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

_COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_COMPARE_AND_EXPIRE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# Raises hash fields of counts to at least the given values (never lowers one), and sets the
# TTL: a floor written back by several processes at once lands once, not once per process.
_RAISE_COUNTS = """
for i = 1, #ARGV - 1, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') or 0
  if current < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV])
return 1
"""
# Appends to a list, drops its oldest items while the sum of their 'tokens' field is over a
# budget (keeping the newest), and slides the TTL; atomic, so concurrent appends cannot lose
# each other.
_APPEND_WITHIN_BUDGET = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local costs, total = {}, 0
for i = 1, #items do
  costs[i] = cjson.decode(items[i])['tokens']
  total = total + costs[i]
end
local drop = 0
while total > tonumber(ARGV[2]) and drop < #items - 1 do
  drop = drop + 1
  total = total - costs[drop]
end
if drop > 0 then redis.call('LTRIM', KEYS[1], drop, -1) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return #items - drop
"""


def connect(settings: Settings, url: str | None = None) -> RedisClient:
    """A client for ``url`` (default: ``settings.redis_url``); the caller closes it
    (``aclose``). Connecting is lazy: a server that is down now is tried again on each command."""
    url = url or settings.redis_url
    timeout = settings.redis_timeout_s
    if settings.redis_cluster:
        # One pool per node; past ``redis_max_connections`` a command fails (the cache is
        # skipped for it) instead of waiting.
        return RedisCluster.from_url(
            url,
            max_connections=settings.redis_max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    # A plain pool, not a blocking one: redis-py's BlockingConnectionPool spends as much time per
    # command on its condition, timeout and lock as the cached path spends on everything else.
    # After Redis restarts every pooled connection is dead and fails its next command once: such
    # a command is sent again, once, on a new connection, instead of opening the breaker.
    return aioredis.Redis.from_url(
        url,
        max_connections=settings.redis_max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )


def _count(value: object) -> int:
    """A hash field of counts as a number; anything else (garbage written by someone else) as 0."""
    try:
        return int(_text(value))
    except ValueError:
        return 0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Breaker:
    """Shared by a gateway and its strict view: when Redis is skipped, and whether it is up."""

    def __init__(self, retry_after_s: float, timeouts_to_open: int) -> None:
        self.retry_after_s = retry_after_s
        self.timeouts_to_open = timeouts_to_open
        self.timeouts = 0  # deadlines passed in a row
        self.closed_until = 0.0  # monotonic time before which Redis is not tried
        self.available = True
        self.round_trips = 0  # commands or pipelines sent; read by the benchmark

    def failed(self, what: str, exc: BaseException) -> None:
        if self.available:
            log.warning("cache store unavailable (%s: %r); serving without cache", what, exc)
        self.available = False
        timed_out = isinstance(exc, TimeoutError | RedisTimeoutError)
        self.timeouts = self.timeouts + 1 if timed_out else self.timeouts_to_open
        if self.timeouts >= self.timeouts_to_open:
            self.closed_until = time.monotonic() + self.retry_after_s

    def succeeded(self) -> None:
        self.timeouts = 0
        if not self.available:
            log.info("cache store reachable again")
            self.available = True


def _check_ttl(ttl_s: int) -> None:
    if ttl_s <= 0:
        raise ValueError("every cache write needs a positive TTL")


def _wrong_type(result: object) -> bool:
    # in a pipeline redis-py wraps the reply: "Command # 2 (GET …) of pipeline caused error: …"
    return isinstance(result, ResponseError) and "WRONGTYPE" in str(result)

"""The one place a Redis client is built: a single server (Redis, Valkey, the embedded Valkey) or a
Redis Cluster, over plain TCP or TLS, with AUTH, all from ``RAG_REDIS_URL``.

``redis://[[user]:password@]host:port/db`` and ``rediss://…`` (TLS) with redis-py's query options,
e.g. ``rediss://:pw@cache:6380/0?ssl_ca_certs=/etc/ca.pem`` (or ``ssl_cert_reqs=none``,
``ssl_certfile=…&ssl_keyfile=…`` for client certificates). With ``RAG_REDIS_CLUSTER=true`` the URL
names any one node of the cluster; the client discovers the others and routes each key to its
slot. Every multi-key command the service sends either names keys of one slot (hash tags, see
``rag.cache.keys``) or is split by slot here (``get_many``) or by redis-py (``DELETE``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeAlias, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from rag.settings import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

# What an unreachable or failing Redis raises. A cluster client raises RedisClusterException (not
# a RedisError) when it cannot reach any node or a slot is not covered.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


def connect(settings: Settings, url: str | None = None) -> RedisClient:
    """A client for ``url`` (default: ``settings.redis_url``); the caller closes it
    (``aclose``). Connecting is lazy: a server that is down now is tried again on each command."""
    url = url or settings.redis_url
    timeout = settings.redis_timeout_s
    if settings.redis_cluster:
        # One pool per node, ``redis_max_connections`` each. The cluster client has no blocking
        # pool: past that many connections to one node a command fails (and the cache is
        # skipped for it) instead of waiting.
        return RedisCluster.from_url(
            url,
            max_connections=settings.redis_max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    # A plain pool, not a blocking one: redis-py's BlockingConnectionPool spends as much time per
    # command on its condition, timeout and lock as the cached path spends on everything else.
    # Past ``redis_max_connections`` a command fails (the cache is skipped for it) instead of
    # waiting; only a follower of another process's generation holds a connection while waiting.
    # After Redis restarts, every pooled connection is dead and fails its next command once: a
    # command that fails on a broken connection is sent again, once, on a new one, instead of
    # failing (which opens the breaker: a second of requests without cache, each time).
    return aioredis.Redis.from_url(
        url,
        max_connections=settings.redis_max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )


async def get_many(client: RedisClient, keys: Sequence[str | bytes]) -> list[bytes | None]:
    """The values of ``keys`` in order: one MGET on a single server; on a cluster one MGET per
    slot, sent together in one pipeline (not atomic across slots, which a cache does not need,
    and no need to force the keys of different layers into one slot)."""
    if isinstance(client, RedisCluster):
        return cast(list[bytes | None], await client.mget_nonatomic(list(keys)))
    # The command itself, not ``client.mget``: redis-py 8 wraps ``mget`` in a deprecation check
    # that inspects its arguments on every call, a tenth of a cached request's CPU time.
    return cast(list[bytes | None], await client.execute_command("MGET", *keys))  # type: ignore[no-untyped-call]

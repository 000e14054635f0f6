"""The one way this library talks to Redis (Redis, Valkey, the embedded Valkey or a Cluster).

No other module imports ``redis``: every command the library sends is a method here, so the
deadline, the failure policy and the repair of bad keys are decided in one place.

- **Fail-open** (``RedisGateway``, the cache): a command that errors or passes its deadline is
  logged (once per outage) and returns the caller's fallback. A refused or broken connection
  opens a small circuit breaker at once: Redis is skipped for ``retry_after_s`` so that requests
  do not each wait on a dead server, and the first call after that window probes it again. A
  deadline passed opens it only after ``timeouts_to_open`` in a row: on a busy machine one late
  answer is the event loop's lag more often than Redis's. Callers never see a Redis exception.
- **Strict** (``gateway.strict(purpose)``: the session store, which is a source of truth, and
  explicit invalidation, which an admin must see fail): the same commands and deadline, but a
  failure raises ``CacheUnavailableError`` (a 503).
- **Repair**: a key holding a value of the wrong type (``WRONGTYPE``) is deleted where it is met,
  and a write to it is sent once more; callers that find a value that does not decode call
  ``delete``. The next request sees a clean miss.

``connect`` builds the client from ``RAG_REDIS_URL``: ``redis://[[user]:password@]host:port/db``
and ``rediss://…`` (TLS) with redis-py's query options (``ssl_ca_certs=…``, ``ssl_cert_reqs=none``,
client certificates). With ``RAG_REDIS_CLUSTER=true`` the URL names any one node; every
multi-key command names keys of one slot (hash tags, ``rag.cache.keys``) or is split by slot
here (``get_many``) or by redis-py (``DELETE``)."""

from rag.cache.gateway._client import REDIS_ERRORS, RedisClient, StreamBatches, connect
from rag.cache.gateway._gateway import RedisGateway

__all__ = ["REDIS_ERRORS", "RedisClient", "RedisGateway", "StreamBatches", "connect"]

"""Request ids, and users' verdicts on the answers they name (``POST /feedback``).

A request id *is* what the verdict needs: the answer's cache key and, for a semantic hit, the
entry that served it, its similarity and the rule scope, signed (HMAC-SHA256) with the
service's secret and the tenant's namespace. So an answer, even a cached one, costs no Redis
write to be given an id (the hit path stays one round trip), no other tenant can name it (the
signature will not match its namespace: a 404, like an id never issued), and an id nobody
issued cannot be made up. An id is valid as long as the answer it names can live (the answer
TTL).

A verdict is taken once per request id (the first one is kept for as long as the id is valid;
another is a 409; one Redis did not take whole is a 503 and can be given again):

- a semantic hit marked incorrect counts as a false hit of its scope and the link is dropped
  (the question stops receiving that answer); marked correct, a judged correct hit;
- an exact answer marked incorrect is removed from the cache (every process drops its near
  copy), so the next ask generates it again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from rag.cache.gateway import RedisGateway
from rag.cache.invalidation import Invalidation
from rag.cache.keys import feedback_key
from rag.errors import CacheUnavailableError, ConflictError, RequestNotFoundError
from rag.semantic.outcomes import OutcomeStore

_MAC_BYTES = 16


@dataclass(frozen=True, slots=True)
class SemanticTicket:
    entry_key: str  # the semantic entry whose answer was served
    veto_key: str  # set to stop this question receiving it
    similarity: float
    scope: str  # the rule scope its outcome counts in


@dataclass(frozen=True, slots=True)
class Ticket:
    """What one request id names."""

    answer_key: str  # the exact answer entry of the question asked
    issued_at: float
    semantic: SemanticTicket | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def request_id_secret(configured: str, data_dir: Path) -> bytes:
    """The key request ids are signed with: ``configured`` (``RAG_REQUEST_ID_SECRET``; every
    process serving the same tenants needs the same), else a random one kept in
    ``data_dir/request-id.key`` (made on first use, readable by its owner only)."""
    if configured:
        return configured.encode()
    path = data_dir / "request-id.key"
    if not path.exists():
        # written whole aside, then linked into place: a process starting at the same moment
        # reads the one key that won, never an empty file
        staged = data_dir / f"request-id.key.{secrets.token_hex(8)}"
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(32))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
        staged.unlink()
    return path.read_bytes()


class RequestIds:
    """Issues and opens the request ids of one tenant (namespace)."""

    def __init__(self, *, secret: bytes, namespace: str, ttl_s: int) -> None:
        self._secret = secret
        self._namespace = namespace
        self.ttl_s = ttl_s

    def _mac(self, payload: str) -> bytes:
        message = f"{self._namespace}\x00{payload}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, ticket: Ticket) -> str:
        fields: list[object] = [ticket.answer_key, round(ticket.issued_at, 3)]
        if ticket.semantic is not None:
            s = ticket.semantic
            fields += [s.entry_key, s.veto_key, round(s.similarity, 4), s.scope]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def open(self, request_id: str, *, now: float | None = None) -> Ticket | None:
        """The ticket of an id this tenant issued that is still valid; None otherwise."""
        payload, _, mac = request_id.partition(".")
        try:
            # the signature as issued, character for character: one answer, one id
            if not hmac.compare_digest(mac.encode(), _b64(self._mac(payload)).encode()):
                return None
            fields = json.loads(_unb64(payload))
            ticket = Ticket(str(fields[0]), float(fields[1]))
            if len(fields) == 6:
                semantic = SemanticTicket(
                    str(fields[2]), str(fields[3]), float(fields[4]), str(fields[5])
                )
                ticket = Ticket(ticket.answer_key, ticket.issued_at, semantic)
        except (binascii.Error, ValueError, TypeError, IndexError):
            return None
        if (now or time.time()) - ticket.issued_at > self.ttl_s:
            return None
        return ticket


class Feedback:
    """One tenant's verdicts. Strict: with Redis away a verdict is a 503, not lost silently."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        namespace: str,
        ids: RequestIds,
        outcomes: OutcomeStore | None,
        invalidation: Invalidation,
    ) -> None:
        self._redis = redis.strict("feedback store")
        self._namespace = namespace
        self._ids = ids
        self._outcomes = outcomes
        self._invalidation = invalidation

    async def give(self, request_id: str, *, correct: bool) -> str:
        """Record the verdict; return what was done, in words."""
        ticket = self._ids.open(request_id)
        if ticket is None:
            raise RequestNotFoundError(
                "unknown request_id: not one of this key's answers, or older than the answers "
                "it can concern"
            )
        key = feedback_key(self._namespace, request_id)
        token = "1" if correct else "0"
        # SET NX: the first verdict is kept, for as long as the id is valid
        taken = await self._redis.acquire(key, token, self._ids.ttl_s * 1000)
        if not taken:
            raise ConflictError("a verdict on this request_id was already recorded")
        try:
            return await self._apply(ticket, correct=correct)
        except CacheUnavailableError:  # not taken whole: the verdict can be given again
            with contextlib.suppress(CacheUnavailableError):
                await self._redis.release(key, token)
            raise

    async def _apply(self, ticket: Ticket, *, correct: bool) -> str:
        semantic = ticket.semantic
        if semantic is not None:
            if self._outcomes is not None and not await self._outcomes.record(
                semantic.scope, semantic.similarity, correct=correct
            ):
                raise CacheUnavailableError("the feedback store (Redis) did not count it")
            if correct:
                return "counted as a correct semantic hit"
            await self._redis.set(semantic.veto_key, b"1", self._ids.ttl_s)
            return "counted as a false semantic hit; this question no longer receives that answer"
        if correct:
            return "recorded"
        await self._invalidation.keys([ticket.answer_key])
        return "the cached answer was removed"

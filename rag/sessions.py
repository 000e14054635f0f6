"""Conversations: a session's turns in Redis, and follow-ups made standalone before they reach
any cache.

The rule that keeps a follow-up from ever being answered out of context: a question asked with
history is first rewritten by the LLM into a standalone question ("and how long does it last?"
→ "How long does a stale-while-revalidate entry last?"), and only that standalone question
reaches retrieval, the exact and semantic caches and the answer prompt. Every cached output is
then keyed on everything that produced it: the rewrite on the history and the follow-up, the
answer on the standalone question and its sources. Two conversations share an answer exactly
when their follow-ups mean the same question, and a standalone question asked again in any
session hits as usual. A first question (no history) is used as it is.

A session is a Redis list of turns under ``rag:{namespace}:session:{id}`` with a sliding TTL:
each completed turn extends it; an idle session expires. History is bounded by a token budget,
oldest turns dropped first (the newest turn is always kept).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import asdict, dataclass

import tiktoken

from rag.cache.aside import CachedLayer
from rag.cache.gateway import RedisGateway
from rag.cache.keys import session_key
from rag.cache.layers import RewriteLayer
from rag.errors import InvalidInputError
from rag.metrics import Metrics
from rag.pipeline import StreamEnd, StreamEvent, StreamToken
from rag.protocols import Generator
from rag.types import CacheMode

SESSION_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")

REWRITE_VERSION = "r2"
REWRITE_SYSTEM = (
    "You rewrite follow-up questions into standalone questions that can be understood without "
    "the conversation. Reply with the rewritten question only, never an answer."
)
REWRITE_EXAMPLE = [  # one worked example: small models copy its form
    {
        "role": "user",
        "content": "Conversation:\nUser: Where is the Eiffel Tower?\nAssistant: In Paris.\n\n"
        "Follow-up: how tall is it?",
    },
    {"role": "assistant", "content": "How tall is the Eiffel Tower?"},
]
REWRITE_USER = "Conversation:\n{conversation}\n\nFollow-up: {question}"
_PREFIX = re.compile(r"^\s*(standalone question|question|rewritten question)\s*:\s*", re.I)
# Words that only mean something within a conversation. A rewrite that still has one did not
# resolve it, and must not become a context-free cache key.
_REFERS_BACK = re.compile(
    r"\b(it|its|they|them|their|theirs|this|these|those|he|him|his|she|her|hers)\b"
    r"|^\W*(and|but|or|so|also|then|what about|how about)\b",
    re.I,
)


def leans_on_context(question: str) -> bool:
    """True when a question cannot be understood alone (an unresolved pronoun, a leading 'and',
    'what about', …, or fewer than three words)."""
    return bool(_REFERS_BACK.search(question)) or len(question.split()) < 3


def rewrite_version() -> str:
    """``REWRITE_VERSION`` plus a hash of the prompt text: an edit moves rewrites to new keys."""
    text = json.dumps([REWRITE_SYSTEM, REWRITE_EXAMPLE, REWRITE_USER]).encode()
    return f"{REWRITE_VERSION}-{hashlib.sha256(text).hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class Turn:
    question: str  # as the user asked it
    standalone: str  # what retrieval, the caches and the LLM saw
    answer: str
    tokens: int  # of question and answer: what the turn costs in the history budget

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Turn:
        data = json.loads(raw)
        return cls(
            question=str(data["question"]),
            standalone=str(data["standalone"]),
            answer=str(data["answer"]),
            tokens=int(data["tokens"]),
        )


@dataclass(frozen=True, slots=True)
class SessionView:
    session_id: str
    turns: list[Turn]
    ttl_s: int


def check_session_id(session_id: str) -> None:
    if not SESSION_ID.fullmatch(session_id):
        raise InvalidInputError(
            "session_id must be 1 to 128 characters of letters, digits, '.', '_' or '-'"
        )


class SessionStore:
    """Turns of each session in Redis. Unlike the caches this is the source of truth, so it does
    not fail open: an unreachable Redis is a 503 (``RedisGateway.strict``), not a silently
    forgotten conversation. A turn is appended atomically, the oldest turns dropped while the
    history is over its token budget, and the TTL slides."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        namespace: str,
        ttl_s: int,
        history_tokens: int,
        encoding: tiktoken.Encoding,
    ) -> None:
        self._redis = redis.strict("session store")
        self._namespace = namespace
        self.ttl_s = ttl_s
        self.history_tokens = history_tokens
        self._encoding = encoding

    def key(self, session_id: str) -> str:
        return session_key(self._namespace, session_id)

    def turn(self, question: str, standalone: str, answer: str) -> Turn:
        tokens = len(self._encoding.encode(question + "\n" + answer, disallowed_special=()))
        return Turn(question=question, standalone=standalone, answer=answer, tokens=tokens)

    async def turns(self, session_id: str) -> list[Turn]:
        items, _ = await self._redis.list_items(self.key(session_id))
        return [Turn.from_json(item) for item in items]

    async def view(self, session_id: str) -> SessionView | None:
        items, ttl = await self._redis.list_items(self.key(session_id))
        if not items:
            return None
        return SessionView(session_id, [Turn.from_json(item) for item in items], ttl)

    async def append(self, session_id: str, turn: Turn) -> int:
        """Store a finished turn; returns how many turns the session keeps."""
        return await self._redis.append_within_budget(
            self.key(session_id), turn.to_json(), self.history_tokens, self.ttl_s
        )

    async def delete(self, session_id: str) -> bool:
        return bool(await self._redis.delete(self.key(session_id)))


class QuestionRewriter:
    """Makes a follow-up standalone with the LLM. Rewrites are the cache layer ``rewrite``
    (``rag.cache.layers.rewrite``), keyed on the LLM model, the rewrite prompt's version, the
    history and the follow-up."""

    def __init__(
        self,
        *,
        generator: Generator,
        rewrites: CachedLayer[RewriteLayer, str],
        metrics: Metrics,
        max_chars: int,
    ) -> None:
        self._generator = generator
        self._rewrites = rewrites
        self._metrics = metrics
        self._max_chars = max_chars

    def key(self, question: str, history: Sequence[Turn]) -> str:
        return self._rewrites.spec.key(question, [(t.standalone, t.answer) for t in history])

    async def standalone(self, question: str, history: Sequence[Turn]) -> str:
        if not history:
            return question

        async def rewrite() -> str:
            return await self._rewrite(question, history)

        value, _ = await self._rewrites.get_or_compute(
            self.key(question, history), rewrite, mode=CacheMode.DEFAULT
        )
        return value

    async def _rewrite(self, question: str, history: Sequence[Turn]) -> str:
        self._metrics.llm_calls.inc()
        completion = await self._generator.complete(self._messages(question, history))
        rewritten = _clean(completion.text) if completion.finish_reason == "stop" else ""
        if (
            not rewritten.endswith("?")
            or leans_on_context(rewritten)
            or len(rewritten) > self._max_chars
        ):
            # Not a standalone question (an answer, an echo of the follow-up, nothing): fall back
            # to the previous question plus the follow-up, which is bound to this conversation.
            room = self._max_chars - len(question) - 1
            previous = history[-1].standalone[-room:] if room > 0 else ""
            rewritten = f"{previous} {question}".strip()
        return rewritten

    @staticmethod
    def _messages(question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
        conversation = "\n".join(f"User: {t.standalone}\nAssistant: {t.answer}" for t in history)
        user = REWRITE_USER.format(conversation=conversation, question=question)
        return [
            {"role": "system", "content": REWRITE_SYSTEM},
            *REWRITE_EXAMPLE,
            {"role": "user", "content": user},
        ]


def _clean(text: str) -> str:
    """The first non-empty line of the model's reply, without a label or quotes."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return _PREFIX.sub("", line).strip().strip("\"'“”").strip()


@dataclass(frozen=True, slots=True)
class TurnPlan:
    session_id: str
    question: str
    standalone: str  # the question the pipeline is asked


class Conversations:
    """What ``/ask`` does with a ``session_id``: load the history, make the question standalone,
    and record the turn once the answer is complete (not on an error or a disconnect)."""

    def __init__(self, *, sessions: SessionStore, rewriter: QuestionRewriter) -> None:
        self.sessions = sessions
        self.rewriter = rewriter

    async def begin(self, session_id: str, question: str) -> TurnPlan:
        check_session_id(session_id)
        history = await self.sessions.turns(session_id)
        standalone = await self.rewriter.standalone(question, history)
        return TurnPlan(session_id=session_id, question=question, standalone=standalone)

    async def finish(self, plan: TurnPlan, answer: str) -> None:
        turn = self.sessions.turn(plan.question, plan.standalone, answer)
        await self.sessions.append(plan.session_id, turn)

    async def record(
        self, plan: TurnPlan, events: AsyncIterator[StreamEvent]
    ) -> AsyncGenerator[StreamEvent, None]:
        """Pass a pipeline stream through; record the turn when it ended normally."""
        pieces: list[str] = []
        async for event in events:
            if isinstance(event, StreamToken):
                pieces.append(event.text)
            elif isinstance(event, StreamEnd):
                await self.finish(plan, "".join(pieces))
            yield event

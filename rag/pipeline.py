"""The question-answering pipeline: retrieve (embedding → search), then answer, each stage behind
its cache layers (``rag.stages``), read top to bottom in ``_plan`` and ``_generate``.

- An exact repeat costs one Redis round trip: one MGET of the embedding, the search result and the
  answer (keys built from the corpus version this process follows, and guessed from earlier
  requests, then verified).
- On an exact answer miss the semantic cache may serve a similar question's answer, or only
  look it up and have it judged once the miss's own answer is done (``rag.semantic.policy``).
- Every answer gets a request id (``rag.feedback``) that a user's verdict can name.
- Identical concurrent misses share one embedding, one search and one generation; stale entries
  are served and refreshed once in the background (stale-while-revalidate).
- An answer is cached only after the model finished normally.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace

from rag.cache.aside import Background
from rag.cache.layers import EMBEDDING, LLM, SEARCH
from rag.corpus_version import CorpusVersion
from rag.errors import InvalidFieldError, InvalidInputError, LLMError
from rag.feedback import RequestIds, SemanticTicket, Ticket
from rag.metrics import Metrics
from rag.prices import ModelPrice
from rag.semantic.cache import SemanticMatch
from rag.semantic.policy import SemanticPolicy
from rag.shedding import Admission
from rag.stages import AnswerStage, Job, RetrievalStage, Timer
from rag.types import (
    Answer,
    AskOptions,
    CacheStatus,
    Completion,
    LayerStatuses,
    ScoredChunk,
    SemanticInfo,
    Usage,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamStart:
    """First event of a stream: cache statuses of all layers and the sources."""

    cache: LayerStatuses
    sources: list[ScoredChunk]
    semantic: SemanticInfo | None = None


@dataclass(slots=True)
class StreamToken:
    text: str


@dataclass(slots=True)
class StreamEnd:
    cache: LayerStatuses
    usage: Usage
    timings_ms: dict[str, float] = field(default_factory=dict)
    request_id: str = ""


StreamEvent = StreamStart | StreamToken | StreamEnd


# Characters of the readable categories (letters, digits, punctuation, symbols) that a person
# still cannot read: fillers that render as nothing, the braille blank, the replacement character
# (what undecodable bytes became).
_BLANK = frozenset("\u034f\u115f\u1160\u3164\uffa0\u2800\ufffd")


def _visible(char: str) -> bool:
    """A letter, digit, punctuation mark or symbol a person would read. Marks (variation
    selectors, combining accents) and format characters (joiners) are not on their own."""
    return unicodedata.category(char)[0] in "LNPS" and char not in _BLANK


@dataclass(frozen=True, slots=True)
class AskLimits:
    """The one owner of a request's limits that depend on settings (the request models own the
    rest). A field out of its bounds is an ``InvalidFieldError`` (a 422 in FastAPI's shape over
    HTTP); a query with nothing visible is an ``InvalidInputError`` (400)."""

    max_top_k: int
    max_query_chars: int

    def check(self, query: str, options: AskOptions, *, semantic_configured: bool) -> None:
        """``InvalidInputError`` saying what is wrong with a request, before any work."""
        if not any(_visible(char) for char in query):
            raise InvalidInputError(
                "query must not be empty: it has no visible character, only whitespace or "
                "invisible characters such as U+200B, U+FE0F or U+2800"
            )
        if len(query) > self.max_query_chars:
            message = f"query is longer than {self.max_query_chars} characters"
            raise InvalidFieldError("query", f"{query[:40]}…", message)
        if options.semantic and not semantic_configured:
            raise InvalidInputError(
                "the semantic cache is off in this service (RAG_SEMANTIC_MODE=off)"
            )
        if not 1 <= options.top_k <= self.max_top_k:
            message = f"top_k must be between 1 and {self.max_top_k}"
            raise InvalidFieldError("top_k", options.top_k, message)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A request after retrieval and the answer lookups: cached (exact or semantic) or a job."""

    statuses: LayerStatuses
    sources: list[ScoredChunk]
    cached: Completion | None
    job: Job
    timer: Timer
    semantic: SemanticInfo | None = None  # served: how it matched
    candidate: SemanticMatch | None = None  # looked up: served (``semantic``) or to be judged
    admission: Admission | None = None  # this request's place among the generations
    request_id: str = ""


class RagPipeline:
    def __init__(
        self,
        *,
        retrieval: RetrievalStage,
        answers: AnswerStage,
        corpus_version: CorpusVersion,
        metrics: Metrics,
        limits: AskLimits,
        background: Background,
        request_ids: RequestIds,
        policy: SemanticPolicy | None = None,
        price: ModelPrice | None = None,
    ) -> None:
        self.retrieval = retrieval
        self.answers = answers
        self.corpus_version = corpus_version
        self.metrics = metrics
        self.limits = limits
        self.request_ids = request_ids
        # the semantic cache, where the mode looks it up at all
        self.policy = policy if policy is not None and policy.mode != "off" else None
        self.semantic = answers.semantic if self.policy is not None else None
        self._price = price or ModelPrice()  # what a cache hit saves
        self.background = background  # the stages' refreshes and TTL extensions

    async def answer(self, query: str, options: AskOptions) -> Answer:
        """The whole answer at once; a miss is generated through the same path as ``stream``."""
        plan = await self._plan(query, options)
        if plan.cached is not None:  # nothing to run: no stream events to go through
            usage, text, timings_ms = Usage(), plan.cached.text, plan.timer.finish()
        else:
            events = [event async for event in self._events(plan, live=False)]
            end = events[-1]
            assert isinstance(end, StreamEnd)
            usage, timings_ms = end.usage, end.timings_ms
            text = "".join(e.text for e in events if isinstance(e, StreamToken))
        return Answer(
            text, plan.sources, plan.statuses, usage, timings_ms, plan.semantic, plan.request_id
        )

    async def stream(self, query: str, options: AskOptions) -> AsyncGenerator[StreamEvent, None]:
        """``StreamStart``, then ``StreamToken``s (live, or the cached answer's original pieces),
        then ``StreamEnd``. Raises ``RagError`` subclasses; after ``StreamStart`` only
        ``UpstreamError``s."""
        events = self._events(await self._plan(query, options))
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # now, not when collected: gives the generation slot back

    async def _events(self, plan: _Plan, *, live: bool = True) -> AsyncGenerator[StreamEvent, None]:
        try:
            yield StreamStart(cache=plan.statuses, sources=plan.sources, semantic=plan.semantic)
            if plan.cached is not None:
                for piece in plan.cached.pieces:
                    yield StreamToken(piece)
                yield StreamEnd(plan.statuses, Usage(), plan.timer.finish(), plan.request_id)
                return
            async for event in self._generate(plan, live=live):
                yield event
        finally:
            if plan.admission is not None:
                plan.admission.release()

    def validate(self, query: str, options: AskOptions) -> None:
        self.limits.check(query, options, semantic_configured=self.semantic is not None)

    async def _plan(self, query: str, options: AskOptions) -> _Plan:
        self.validate(query, options)
        timer, started = Timer(self.metrics), time.perf_counter()
        version = self.corpus_version.current  # read once: every key of this request uses it
        fetched = await self.retrieval.prefetch(query, options.top_k, options.mode, version)
        timer.record("cache_lookup", started)
        if not self._may_serve_semantic(options) and self.retrieval.nothing_cached(query, fetched):
            self.answers.check_room()  # overloaded: shed a new question before embedding it
        found = await self.retrieval.retrieve(
            query, options.top_k, mode=options.mode, timer=timer, fetched=fetched, version=version
        )
        key = self.answers.key(query, found.sources)
        if found.search_key is not None:
            self.retrieval.remember_answer_key(found.search_key, key)
        scope = self._semantic_scope(options, found.version)
        job = Job(query, found.sources, key, options.mode, scope, found.vector)
        if found.version is None:  # no corpus version known: nothing cached can be current
            cached, status = None, CacheStatus.BYPASS
        else:
            cached, status = await self.answers.lookup(job, fetched)
        statuses = LayerStatuses({EMBEDDING.name: found.embedding, SEARCH.name: found.search})
        plan = _Plan(statuses, found.sources, cached, job, timer)
        if cached is None and scope is not None:
            plan = await self._semantic_lookup(plan, options)
        plan.statuses[LLM.name] = CacheStatus.SEMANTIC if plan.semantic else status
        self.answers.record(plan.statuses[LLM.name])
        plan = replace(plan, request_id=self._request_id(plan))
        if plan.cached is None:  # shed now, before the stream starts, if there is no room
            plan = replace(plan, admission=self.answers.admit(job.key))
        else:
            usage = plan.cached.usage
            self.metrics.tokens_saved.inc(usage.prompt_tokens + usage.completion_tokens)
            self.metrics.cost_saved.inc(self._price.cost(usage))
        return plan

    def _may_serve_semantic(self, options: AskOptions) -> bool:
        return options.semantic is not False and self.policy is not None and self.policy.serves

    def _request_id(self, plan: _Plan) -> str:
        served = plan.candidate if plan.semantic is not None else None
        semantic = None
        if served is not None and self.semantic is not None and self.policy is not None:
            semantic = SemanticTicket(
                entry_key=served.entry_key,
                veto_key=self.semantic.veto_key(plan.job.query, served.entry_key),
                similarity=served.similarity,
                scope=self.policy.scope,
            )
        return self.request_ids.issue(Ticket(plan.job.key, time.time(), semantic))

    def _semantic_scope(self, options: AskOptions, version: str | None) -> str | None:
        if self.semantic is None or options.semantic is False or version is None:
            return None
        return self.semantic.scope(version)

    async def _semantic_lookup(self, plan: _Plan, options: AskOptions) -> _Plan:
        job = plan.job
        vector = job.vector
        if vector is None:  # the search was a hit: the vector was not needed until now
            vector = await self.retrieval.vector(job.query, timer=plan.timer, write=job.mode.writes)
        plan = replace(plan, job=replace(job, vector=vector))
        if not options.mode.reads:
            return plan
        policy = self.policy
        assert self.semantic is not None and policy is not None
        assert job.semantic_scope is not None
        match = await self.semantic.lookup(
            scope=job.semantic_scope,
            query=job.query,
            vector=vector,
            threshold=policy.lookup_threshold(options.threshold),
        )
        if match is None:
            return plan
        if not await policy.serve(match, options.threshold):
            return replace(plan, candidate=match)  # judged once this miss's answer is done
        if policy.audit_now():
            self.background.spawn(self._audit(plan.job, match))
        info = SemanticInfo(
            similarity=round(match.similarity, 4), matched_query=match.matched_query
        )
        return replace(
            plan, cached=match.completion, sources=match.sources, semantic=info, candidate=match
        )

    async def _audit(self, job: Job, match: SemanticMatch) -> None:
        """Regenerate a served semantic hit's answer (cached as the question's own) and judge
        the hit by it."""
        try:
            completion = await self.answers.regenerate(job)
        except Exception as exc:  # background work: the user already has the answer
            log.warning("could not audit a semantic hit: %r", exc)
            return
        assert self.policy is not None
        await self.policy.judge(match, completion.text, job.sources)

    async def _generate(self, plan: _Plan, *, live: bool) -> AsyncIterator[StreamToken | StreamEnd]:
        """A fresh answer, generated once however many identical requests want it."""
        started = time.perf_counter()
        completion: Completion | None = None
        async for item in self.answers.generate(plan.job, live=live):
            if isinstance(item, Completion):
                completion = item
            else:
                yield StreamToken(item)
        plan.timer.record("llm", started)
        if completion is None:  # pragma: no cover - relay and Generator contract
            raise LLMError("the LLM stream ended without finishing")
        if plan.candidate is not None and self.policy is not None:  # a shadow candidate
            self.background.spawn(
                self.policy.judge(plan.candidate, completion.text, plan.job.sources)
            )
        yield StreamEnd(plan.statuses, completion.usage, plan.timer.finish(), plan.request_id)

    async def aclose(self) -> None:
        """Cancel background work (at shutdown)."""
        await self.background.aclose()
        await self.answers.aclose()

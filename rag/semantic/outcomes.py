"""What the semantic cache's candidates turned out to be, per scope: the live false-hit bound.

An *outcome* is one candidate the rule accepted (a similar earlier question whose answer could
be given) judged right or wrong: by the answer judge in shadow mode (the miss's own answer
against the candidate's), by an audit (a served hit regenerated in the background and judged
the same way), or by a user's feedback. Safety then rests on the traffic the service serves,
not on pairs anyone wrote.

Counts live in Redis, shared by every process: one hash per scope with two fields per
threshold of the grid (``semantic_auto_thresholds``). An outcome at similarity ``s`` counts at
every grid threshold ``t <= s``: at ``t`` that candidate would have been served. So the hash has
a fixed size, and expires ``semantic_outcomes_ttl_s`` after the scope's last outcome.

A scope here is what the rule's error rate depends on: the models, prompt, sampling and the
rule itself (verifier kind and min score); not the corpus version, which changes with every
document and must not throw the evidence away.

The bound is the one-sided 95 % Clopper-Pearson upper limit of the false-hit rate (the same as
``rag semantic calibrate``'s budget): with no false hit it needs 149 outcomes to come within 2 %,
so "enough judged outcomes" is part of the bound.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy.special import betaincinv

from rag.cache.gateway import RedisGateway
from rag.cache.keys import semantic_outcomes_key

log = logging.getLogger(__name__)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper ``confidence`` Clopper-Pearson bound of a rate seen as ``k`` in ``n``:
    the p at which seeing ``k`` or fewer has probability ``1 - confidence``, i.e. the
    ``confidence`` quantile of Beta(k + 1, n - k)."""
    if n <= 0 or k >= n:
        return 1.0
    return float(betaincinv(k + 1, n - k, confidence))


@dataclass(frozen=True, slots=True)
class Tally:
    """The outcomes of candidates at or above one threshold."""

    threshold: float
    judged: int
    false_hits: int

    @property
    def rate(self) -> float:
        return self.false_hits / self.judged if self.judged else 0.0

    @property
    def upper_95(self) -> float:
        return clopper_pearson_upper(self.false_hits, self.judged)


@dataclass(frozen=True, slots=True)
class ScopeOutcomes:
    scope: str
    tallies: tuple[Tally, ...]  # by threshold, lowest first

    def serving_threshold(self, budget: float) -> float | None:
        """The lowest threshold whose bound is within ``budget``; None: serve nowhere."""
        return next((t.threshold for t in self.tallies if t.upper_95 <= budget), None)

    def report(self, threshold: float | None, *, serving: bool) -> dict[str, Any]:
        """The row of ``GET /stats`` ``semantic.scopes``: the outcomes at ``threshold`` (the
        grid's highest at or below it), or over all of them (the lowest) when it is None."""
        below = [t for t in self.tallies if threshold is not None and t.threshold <= threshold]
        tally = below[-1] if below else self.tallies[0]
        return {
            "scope": self.scope,
            "judged": tally.judged,
            "false_hits": tally.false_hits,
            "false_hit_rate": round(tally.rate, 4),
            "false_hit_upper_95": round(tally.upper_95, 4),
            "threshold": threshold,
            "serving": serving,
        }


def _field(kind: str, threshold: float) -> str:
    return f"{kind}:{threshold:g}"


def increments(grid: Sequence[float], similarity: float, *, correct: bool) -> dict[str, int]:
    """What one judged candidate adds to a scope's counts: one judged (and one false hit, if
    it was wrong) at every threshold of ``grid`` its similarity reaches."""
    added: dict[str, int] = {}
    for threshold in grid:
        if similarity >= threshold:
            added[_field("n", threshold)] = 1
            added[_field("f", threshold)] = 0 if correct else 1
    return added


def tallies(scope: str, grid: Sequence[float], counts: dict[str, int]) -> ScopeOutcomes:
    """A scope's counts (as ``increments`` add them up) as tallies by threshold; a count that
    makes no sense (negative, more false hits than judged) is clamped."""
    found = []
    for threshold in grid:
        judged = max(counts.get(_field("n", threshold), 0), 0)
        false_hits = min(max(counts.get(_field("f", threshold), 0), 0), judged)
        found.append(Tally(threshold, judged, false_hits))
    return ScopeOutcomes(scope, tuple(found))


class OutcomeStore:
    def __init__(
        self, *, redis: RedisGateway, namespace: str, grid: Sequence[float], ttl_s: int
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self.grid = tuple(sorted(grid))
        self._ttl_s = ttl_s
        self._seen: dict[str, dict[str, int]] = {}  # scope -> the highest counts read

    async def record(self, scope: str, similarity: float, *, correct: bool) -> bool:
        """Count one judged candidate; whether Redis took it."""
        added = increments(self.grid, similarity, correct=correct)
        if not added:
            return True
        key = semantic_outcomes_key(self._namespace, scope)
        return await self._redis.add_counts(key, added, self._ttl_s)

    async def read(self, scope: str) -> ScopeOutcomes:
        """The scope's tallies: Redis's counts, but never below what this process saw before.
        Redis may lose or roll back what it acknowledged (a restart from an older snapshot);
        a false hit must not be forgotten for that, so counts found lower than seen are
        written back (as a floor: processes doing it at once do not add up)."""
        key = semantic_outcomes_key(self._namespace, scope)
        counts = await self._redis.counts(key)
        seen = self._seen.setdefault(scope, {})
        behind = {f: n for f, n in seen.items() if counts.get(f, 0) < n}
        if behind and self._redis.available:
            log.warning("Redis lost semantic outcomes of scope %s; writing them back", scope)
            await self._redis.raise_counts(key, behind, self._ttl_s)
        for field, count in counts.items():
            seen[field] = max(seen.get(field, 0), count)
        return tallies(scope, self.grid, seen)

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

The bound is the one-sided 95 % Clopper-Pearson upper limit of the false-hit rate: with no false
hit it needs 149 outcomes to come within 2 %, so "enough judged outcomes" is part of the bound.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.cache.gateway import RedisGateway
from rag.cache.keys import semantic_outcomes_key


@functools.lru_cache(maxsize=4096)
def upper_95(false_hits: int, judged: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of a rate seen ``false_hits`` in ``judged``:
    the rate ``p`` at which seeing at most ``false_hits`` has probability 5 %. 1.0 with nothing
    judged."""
    if judged <= 0 or false_hits >= judged:
        return 1.0
    low, high = false_hits / judged, 1.0
    for _ in range(50):  # bisection: the binomial CDF falls as p rises
        mid = (low + high) / 2
        if _binomial_cdf(false_hits, judged, mid) > 0.05:
            low = mid
        else:
            high = mid
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be large)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    return sum(
        math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        for i in range(k + 1)
    )


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
        return upper_95(self.false_hits, self.judged)


@dataclass(frozen=True, slots=True)
class ScopeOutcomes:
    scope: str
    tallies: tuple[Tally, ...]  # by threshold, lowest first

    def serving_threshold(self, budget: float) -> float | None:
        """The lowest threshold whose bound is within ``budget``; None: serve nowhere."""
        return next((t.threshold for t in self.tallies if t.upper_95 <= budget), None)

    def report(self, budget: float, *, serving: bool) -> dict[str, Any]:
        """The row of ``GET /stats`` ``semantic.scopes``: at the threshold served at, or, when
        none qualifies, over every outcome (the lowest threshold). ``serving``: whether this
        mode serves there at all (``shadow`` never does)."""
        threshold = self.serving_threshold(budget)
        tally = next((t for t in self.tallies if t.threshold == threshold), self.tallies[0])
        return {
            "scope": self.scope,
            "judged": tally.judged,
            "false_hits": tally.false_hits,
            "false_hit_rate": round(tally.rate, 4),
            "false_hit_upper_95": round(tally.upper_95, 4),
            "threshold": threshold,
            "serving": serving and threshold is not None,
        }


def _field(kind: str, threshold: float) -> str:
    return f"{kind}:{threshold:g}"


class OutcomeStore:
    def __init__(
        self, *, redis: RedisGateway, namespace: str, grid: Sequence[float], ttl_s: int
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self.grid = tuple(sorted(grid))
        self._ttl_s = ttl_s

    async def record(self, scope: str, similarity: float, *, correct: bool) -> bool:
        """Count one judged candidate; whether Redis took it."""
        increments: dict[str, int] = {}
        for threshold in self.grid:
            if similarity >= threshold:
                increments[_field("n", threshold)] = 1
                increments[_field("f", threshold)] = 0 if correct else 1
        if not increments:
            return True
        key = semantic_outcomes_key(self._namespace, scope)
        return await self._redis.add_counts(key, increments, self._ttl_s)

    async def read(self, scope: str) -> ScopeOutcomes:
        """The scope's tallies (none judged when Redis does not answer: nothing is served)."""
        counts = await self._redis.counts(semantic_outcomes_key(self._namespace, scope))
        tallies = []
        for threshold in self.grid:
            judged = max(counts.get(_field("n", threshold), 0), 0)
            false_hits = min(max(counts.get(_field("f", threshold), 0), 0), judged)
            tallies.append(Tally(threshold, judged, false_hits))
        return ScopeOutcomes(scope, tuple(tallies))

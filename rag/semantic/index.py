"""In-process vector index over the semantic cache's entries: a float32 matrix searched with one
matrix-vector product, per scope, with a global cap (oldest entries evicted first) and expiry.
Redis stays the source of truth; this is a copy that ``SemanticCache`` keeps in sync."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from rag.protocols import Vector


@dataclass(frozen=True, slots=True)
class IndexEntry:
    key: str  # the Redis key of the entry
    scope: str
    query: str
    answer_key: str  # where the answer lives (the exact answer cache)
    expires_at: float  # time.time() seconds


class _ScopeMatrix:
    """Rows of unit vectors with free-slot reuse; invalid rows score -2 (below any cosine)."""

    def __init__(self, dimension: int) -> None:
        self.vectors = np.zeros((64, dimension), np.float32)
        self.penalty = np.full(64, -4.0, np.float32)  # 0 for a live row
        self.keys: list[str | None] = [None] * 64
        self.free: list[int] = list(range(63, -1, -1))
        self.rows: dict[str, int] = {}

    def add(self, key: str, vector: Vector) -> None:
        if key in self.rows:
            self.vectors[self.rows[key]] = vector
            return
        if not self.free:
            n = len(self.keys)
            self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
            self.penalty = np.concatenate([self.penalty, np.full(n, -4.0, np.float32)])
            self.keys.extend([None] * n)
            self.free = list(range(2 * n - 1, n - 1, -1))
        row = self.free.pop()
        self.vectors[row] = vector
        self.penalty[row] = 0.0
        self.keys[row] = key
        self.rows[key] = row

    def remove(self, key: str) -> None:
        row = self.rows.pop(key, None)
        if row is not None:
            self.penalty[row] = -4.0
            self.keys[row] = None
            self.free.append(row)

    def vector(self, key: str) -> Vector:
        row: Vector = self.vectors[self.rows[key]]
        return row

    def search(self, vector: Vector, threshold: float, limit: int) -> list[tuple[str, float]]:
        scores = self.vectors @ vector + self.penalty
        above = np.flatnonzero(scores >= threshold)
        if len(above) > limit:
            above = above[np.argpartition(scores[above], -limit)[-limit:]]
        ranked = sorted(((float(scores[i]), i) for i in above), reverse=True)
        return [(self.keys[i], s) for s, i in ranked if self.keys[i] is not None]  # type: ignore[misc]


class SemanticIndex:
    def __init__(self, *, dimension: int, max_entries: int) -> None:
        self._dimension = dimension
        self.max_entries = max_entries
        self._scopes: dict[str, _ScopeMatrix] = {}
        self._entries: OrderedDict[str, IndexEntry] = OrderedDict()  # oldest first
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: IndexEntry, vector: Vector) -> None:
        self._entries.pop(entry.key, None)
        self._entries[entry.key] = entry
        self._scopes.setdefault(entry.scope, _ScopeMatrix(self._dimension)).add(entry.key, vector)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self.remove(oldest)
            self.evictions += 1

    def remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            matrix = self._scopes[entry.scope]
            matrix.remove(key)
            if not matrix.rows:
                del self._scopes[entry.scope]

    def clear(self) -> None:
        self._scopes.clear()
        self._entries.clear()

    def vector(self, entry: IndexEntry) -> Vector:
        return self._scopes[entry.scope].vector(entry.key)

    def candidates(
        self, scope: str, vector: Vector, threshold: float, limit: int = 4
    ) -> list[tuple[IndexEntry, float]]:
        """Live entries of ``scope`` with cosine ≥ ``threshold``, best first. Expired ones met on
        the way are dropped."""
        matrix = self._scopes.get(scope)
        if matrix is None:
            return []
        now = time.time()
        found = []
        for key, similarity in matrix.search(vector, threshold, limit):
            entry = self._entries[key]
            if entry.expires_at <= now:
                self.remove(key)
            else:
                found.append((entry, similarity))
        return found

    def drop_expired(self) -> int:
        now = time.time()
        expired = [k for k, e in self._entries.items() if e.expires_at <= now]
        for key in expired:
            self.remove(key)
        return len(expired)

"""In-process vector index over the semantic cache's entries: a float32 matrix searched with one
matrix-vector product, per scope, with a global cap (oldest entries evicted first) and expiry.
Redis stays the source of truth; this is a copy that ``SemanticCache`` keeps in sync."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rag.protocols import Vector


@dataclass(frozen=True, slots=True)
class IndexEntry:
    key: str  # the Redis key of the entry
    scope: str
    query: str
    answer_key: str  # where the answer lives (the exact answer cache)
    expires_at: float  # time.time() seconds


_FIT_AT = 2048  # rows at which a scope starts using (and, at every 4x, refits) its projection
_PROJECTED_DIMS = 32
_MARGIN = 1e-4  # float32 rounding allowance on the bound: never prune a row that qualifies


class _ScopeMatrix:
    """Rows of unit vectors with free-slot reuse; freed rows carry a -4 penalty so they never
    reach a threshold.

    Large scopes prune with an exact bound instead of scanning all 384 dimensions: with an
    orthonormal basis P of the top principal components, q·v = (Pᵀq)·(Pᵀv) + q⊥·v⊥ and
    |q⊥·v⊥| ≤ |q⊥||v⊥|, so rows whose projected score plus that bound stays below the threshold
    cannot qualify. Only the few rows left are scored in full. The basis only changes how much
    is pruned, never what is found."""

    def __init__(self, dimension: int) -> None:
        self.vectors = np.zeros((64, dimension), np.float32)
        self.penalty = np.full(64, -4.0, np.float32)  # 0 for a live row
        self.keys: list[str | None] = [None] * 64
        self.free: list[int] = list(range(63, -1, -1))  # lowest rows are used first
        self.rows: dict[str, int] = {}
        self.high_water = 0  # rows at and above it were never used: searches skip them
        self.basis: npt.NDArray[np.float32] | None = None
        self.projected = np.zeros((64, _PROJECTED_DIMS), np.float32)
        self.residual = np.zeros(64, np.float32)  # |v - P Pᵀ v| per row
        self._next_fit = _FIT_AT

    def add(self, key: str, vector: Vector) -> None:
        row = self.rows.get(key)
        if row is None:
            if not self.free:
                self._grow()
            row = self.free.pop()
            self.high_water = max(self.high_water, row + 1)
            self.keys[row] = key
            self.rows[key] = row
        self.vectors[row] = vector
        self.penalty[row] = 0.0
        if self.basis is not None:
            self._project(slice(row, row + 1))
        if len(self.rows) >= self._next_fit:
            self._fit()

    def _grow(self) -> None:
        n = len(self.keys)
        self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
        self.penalty = np.concatenate([self.penalty, np.full(n, -4.0, np.float32)])
        self.projected = np.vstack([self.projected, np.zeros_like(self.projected)])
        self.residual = np.concatenate([self.residual, np.zeros(n, np.float32)])
        self.keys.extend([None] * n)
        self.free = list(range(2 * n - 1, n - 1, -1))

    def _fit(self) -> None:
        live = self.vectors[: self.high_water][self.penalty[: self.high_water] == 0]
        _, eigenvectors = np.linalg.eigh(live.T @ live)
        self.basis = np.ascontiguousarray(eigenvectors[:, ::-1][:, :_PROJECTED_DIMS], np.float32)
        self._project(slice(0, self.high_water))
        self._next_fit = 4 * len(self.rows)

    def _project(self, rows: slice) -> None:
        assert self.basis is not None
        block = self.vectors[rows]
        self.projected[rows] = block @ self.basis
        self.residual[rows] = np.linalg.norm(block - self.projected[rows] @ self.basis.T, axis=1)

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
        n = self.high_water
        if self.basis is None:
            scores = self.vectors[:n] @ vector + self.penalty[:n]
            above = np.flatnonzero(scores >= threshold)
            found = scores[above]
        else:
            q = self.basis.T @ vector
            q_residual = float(np.linalg.norm(vector - self.basis @ q))
            bound = self.projected[:n] @ q + self.residual[:n] * q_residual + self.penalty[:n]
            maybe = np.flatnonzero(bound >= threshold - _MARGIN)
            exact = self.vectors[maybe] @ vector
            keep = exact >= threshold
            above, found = maybe[keep], exact[keep]
        if len(above) > limit:
            top = np.argpartition(found, -limit)[-limit:]
            above, found = above[top], found[top]
        ranked = sorted(zip(found.tolist(), above.tolist(), strict=True), reverse=True)
        return [(self.keys[i], s) for s, i in ranked if self.keys[i] is not None]  # type: ignore[misc]


class SemanticIndex:
    def __init__(self, *, dimension: int, max_entries: int) -> None:
        self.dimension = dimension
        self.max_entries = max_entries
        self._scopes: dict[str, _ScopeMatrix] = {}
        self._entries: OrderedDict[str, IndexEntry] = OrderedDict()  # oldest first
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: IndexEntry, vector: Vector) -> None:
        self._entries.pop(entry.key, None)
        self._entries[entry.key] = entry
        self._scopes.setdefault(entry.scope, _ScopeMatrix(self.dimension)).add(entry.key, vector)
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

"""The questions a run asks: read from a JSONL file, or generated from labelled pairs with
Zipf-distributed popularity (exact repeats), paraphrases and unique questions."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _checkout() -> Path:
    """The source tree this package sits in (an editable install); the working directory when it
    is installed on its own, so that a run writes nothing into site-packages."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


ROOT = _checkout()
# Paraphrases: QQP's dev pairs where the shared data sits beside the repository; otherwise the
# repository's own labelled pairs, so that a bare clone still runs.
SHARED_PAIRS = ROOT.parent / "shared" / "data" / "pairs" / "qqp-dev.jsonl"
OWN_PAIRS = ROOT / "tests" / "data" / "semantic_traps.jsonl"
DEFAULT_PAIRS = SHARED_PAIRS if SHARED_PAIRS.exists() else OWN_PAIRS


@dataclass(frozen=True, slots=True)
class Query:
    """One request of the workload; queries of one ``group`` deserve the same answer."""

    text: str
    group: str | None = None
    kind: str = "file"  # generated: first | repeat | paraphrase | unique


def load_workload(path: Path) -> list[Query]:
    """Lines ``{"query": ..., "group"?: ...}``; blank lines are skipped."""
    queries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise ValueError(f"{path}:{n}: every line needs a non-empty 'query'")
        group = row.get("group")
        queries.append(Query(text=row["query"], group=None if group is None else str(group)))
    if not queries:
        raise ValueError(f"{path} holds no queries")
    return queries


def write_workload(queries: Sequence[Query], path: Path) -> None:
    """The workload as run, in the format ``load_workload`` reads (plus each query's kind)."""
    path.write_text(
        "".join(
            json.dumps({"query": q.text, "group": q.group, "kind": q.kind}) + "\n" for q in queries
        )
    )


def _usable(text: str) -> bool:
    return 12 <= len(text) <= 200 and "\n" not in text


def load_pairs(paths: Sequence[Path]) -> tuple[list[tuple[str, str]], list[str]]:
    """Positive pairs whose two questions differ and belong to no other pair, and the other
    questions (from negative pairs), each once."""
    positives: list[tuple[str, str]] = []
    others: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            a, b = str(row["a"]).strip(), str(row["b"]).strip()
            if row.get("label") == 1:
                if (
                    _usable(a)
                    and _usable(b)
                    and a.lower() != b.lower()
                    and not {a.lower(), b.lower()} & seen
                ):
                    positives.append((a, b))
                seen |= {a.lower(), b.lower()}
            else:
                others += [q for q in (a, b) if _usable(q)]
    uniques, taken = [], set(seen)
    for q in others:
        if q.lower() not in taken:
            taken.add(q.lower())
            uniques.append(q)
    return positives, uniques


class _PopularDraws:
    """Draws from the popular questions by Zipf weight: the first side of a pair (a first ask,
    then exact repeats), or the second side of one already asked (its paraphrase, once)."""

    def __init__(
        self, rng: random.Random, popular: Sequence[tuple[str, str]], zipf_s: float
    ) -> None:
        self._rng = rng
        self._popular = popular
        self._weights = [1.0 / (rank**zipf_s) for rank in range(1, len(popular) + 1)]
        self._asked: set[int] = set()
        self._paraphrased: set[int] = set()

    def popular(self) -> Query:
        i = self._rng.choices(range(len(self._popular)), weights=self._weights)[0]
        kind = "repeat" if i in self._asked else "first"
        self._asked.add(i)
        return Query(text=self._popular[i][0], group=f"p{i}", kind=kind)

    def paraphrase(self) -> Query | None:
        candidates = sorted(self._asked - self._paraphrased)
        if not candidates:
            return None
        weights = [self._weights[c] for c in candidates]
        i = self._rng.choices(candidates, weights=weights)[0]
        self._paraphrased.add(i)
        return Query(text=self._popular[i][1], group=f"p{i}", kind="paraphrase")


def generate_workload(
    *,
    size: int,
    seed: int,
    shares: tuple[float, float, float],
    pairs: Sequence[Path],
    zipf_s: float,
    distinct: int | None,
) -> list[Query]:
    """``size`` queries: popular questions by Zipf weight (first draw, then exact repeats),
    paraphrases of popular questions already asked, and unique questions, shuffled together."""
    rng = random.Random(seed)
    positives, uniques = load_pairs(pairs)
    rng.shuffle(positives)
    rng.shuffle(uniques)
    total = sum(shares)
    n_para = round(size * shares[1] / total)
    n_unique = round(size * shares[2] / total)
    n_popular = size - n_para - n_unique
    # Enough popular questions that every paraphrase slot finds one already asked.
    pool = distinct or max(1, n_para + 2, round(0.35 * n_popular))
    if pool > len(positives) or n_unique > len(uniques):
        raise ValueError("not enough questions in the pairs files for this size")
    draws = _PopularDraws(rng, positives[:pool], zipf_s)
    kinds = ["popular"] * n_popular + ["paraphrase"] * n_para + ["unique"] * n_unique
    rng.shuffle(kinds)

    owed = 0  # paraphrase slots that came before any question they could paraphrase
    out: list[Query] = []
    for n, kind in enumerate(kinds):
        if kind == "unique":
            out.append(Query(text=uniques[n], group=f"u{n}", kind="unique"))
        elif kind == "paraphrase" or owed:
            query = draws.paraphrase()
            if query is None:
                owed += kind == "paraphrase"
                query = draws.popular()
            elif kind != "paraphrase":
                owed -= 1
            out.append(query)
        else:
            out.append(draws.popular())
    return out

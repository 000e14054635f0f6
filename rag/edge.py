"""The embedded default vector store: Qdrant Edge (``qdrant-edge-py``), Qdrant's own engine
in-process (HNSW index, payload indexes, exact filters), persisted to a folder.

``<data_dir>/edge/<collection>/`` holds:
- ``shard-<id>/``: the live shard (segments, write-ahead log, indexes). One process opens it:
  its write-ahead log is locked.
- ``current``: the name of the live shard folder, replaced in one step.
- ``corpus.json``: the corpus record (``rag.corpus_version.CorpusState``), replaced in one step
  after the shard has flushed the points it describes.

Points and the visibility rule are the ones of ``rag.retrieval`` (same payload, same filters,
translated by ``edge_filter``), so a document change is all-or-nothing here as on a server.

**Indexing without stopping the service.** A new point lands in the shard's appendable segment,
which search scores exactly: it is searchable at once. Building the HNSW index is another
matter: the binding holds the GIL for the whole build (minutes at 100k points), which would stop
the event loop. So the index is built in a child process on a copy of the shard, once writes
have been quiet for a while and enough points are unindexed: writes pause while the copy is made
(searches go on), then resume on the live shard and are journaled; the child (``python -m
rag.edge``) loads the copy, builds the index and exits; the service loads the indexed copy,
replays the journal and switches to it (search waits for that load: about as long as a start).
A build that fails or is cancelled leaves the live shard as it was; a crash leaves a folder
that the next start removes, and the child dies with the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient, models

from rag.corpus_version import CorpusState
from rag.errors import RetrievalError
from rag.protocols import Vector
from rag.retrieval import (
    QdrantRetriever,
    chunk_from_payload,
    chunk_point_id,
    in_generations,
    matches,
    point_payload,
    superseded,
    unswitched,
    visible,
)
from rag.types import Chunk, ScoredChunk

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2)
_PAYLOAD_INDEXES = {
    "doc_id": qe.PayloadSchemaType.Keyword,
    "generation": qe.PayloadSchemaType.Keyword,
    "staged": qe.PayloadSchemaType.Integer,  # 0 or 1: see ``_stored``
}


def edge_filter(selector: models.Filter) -> qe.Filter:
    """``selector`` (built by ``rag.retrieval``) in the edge engine's types."""

    def conditions(items: Any) -> list[Any] | None:
        if items is None:
            return None
        return [condition(c) for c in (items if isinstance(items, list) else [items])]

    def condition(c: Any) -> Any:
        if isinstance(c, models.Filter):
            return edge_filter(c)
        if isinstance(c, models.FieldCondition) and isinstance(c.match, models.MatchValue):
            return qe.FieldCondition(key=c.key, match=qe.MatchValue(_stored(c.match.value)))
        if isinstance(c, models.FieldCondition) and isinstance(c.match, models.MatchAny):
            return qe.FieldCondition(key=c.key, match=qe.MatchAny([str(v) for v in c.match.any]))
        raise TypeError(f"no Qdrant Edge form for the condition {c!r}")

    return qe.Filter(
        must=conditions(selector.must),
        should=conditions(selector.should),
        must_not=conditions(selector.must_not),
    )


def _stored(value: Any) -> Any:
    """A payload value as this store keeps it: the binding cannot match a boolean (0.9.0 turns
    ``True`` into 1 in a match and never matches a stored ``true``), so booleans (``staged``)
    are kept as 0 or 1."""
    return int(value) if isinstance(value, bool) else value


def _payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _stored(value) for key, value in payload.items()}


def shard_config(dimension: int) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        # Indexed segments also keep int8 copies of the vectors in memory: the graph is built
        # and walked on those (4x less to read), and the best candidates are rescored on the
        # full vectors (``_RESCORE``): at 1M chunks, 2-4x faster searches at higher recall
        # (README, "The embedded vector store"). A store made before gets them at its next build.
        quantization_config=qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
        ),
        # Every segment with points is indexed by a build (builds are rare, see ``index_after``)
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


# Twice the candidates asked for are found on the int8 copies and rescored on the full vectors,
# so scores are exact cosines (a store without int8 copies searches its full vectors).
_RESCORE = qe.QuantizationSearchParams(rescore=True, oversampling=2.0)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step, durably (a crash leaves the old or the new content)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load(path: Path) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(path))
    except Exception as exc:
        if "WouldBlock" in str(exc):  # the write-ahead log is locked by its owner
            raise RetrievalError(
                f"the vector store folder {path} is in use by another process (a running "
                "`rag serve`?). Stop it, or use a Qdrant server (RAG_QDRANT_URL) to share "
                "the corpus between processes."
            ) from exc
        raise RetrievalError(f"cannot open the vector store folder {path}: {exc}") from exc


class EdgeRetriever:
    """``DocumentStore`` and ``VersionStore`` on one Qdrant Edge shard (cosine distance)."""

    def __init__(
        self,
        *,
        folder: Path,
        dimension: int,
        hnsw_ef: int,
        index_after: int,
        quiet_s: float = 5.0,
    ) -> None:
        """Open (or create) the store in ``folder``. ``index_after``: unindexed points that
        call for an index build, once writes have been quiet for ``quiet_s``."""
        self._folder = folder
        self._dimension = dimension
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef, quantization=_RESCORE)
        self._index_after = index_after
        self._quiet_s = quiet_s
        self._adopt(None)
        self._writes = asyncio.Lock()  # held while the shard is copied and while it is swapped
        self._journal: list[qe.UpdateOperation] | None = None  # writes during a build
        self._last_write = 0.0
        self._indexer: asyncio.Task[None] | None = None
        self.builds = 0  # index builds completed (tests and the scaling script read it)
        folder.mkdir(parents=True, exist_ok=True)
        current = folder / "current"
        if current.exists():
            self._live = folder / current.read_text(encoding="utf-8").strip()
            self._shard = _load(self._live)
        else:
            self._live = folder / "shard-0"
            shutil.rmtree(self._live, ignore_errors=True)  # a crash before ``current`` was made
            self._shard = qe.EdgeShard.create(str(self._live), shard_config(dimension))
            for name, kind in _PAYLOAD_INDEXES.items():
                self._shard.update(qe.UpdateOperation.create_field_index(name, kind))
            self._shard.flush()
            _write_atomic(current, self._live.name)
        for leftover in folder.glob("shard-*"):  # builds a crash interrupted
            if leftover != self._live:
                shutil.rmtree(leftover, ignore_errors=True)

    # -- the corpus record

    async def read_state(self) -> CorpusState | None:
        try:
            text = (self._folder / "corpus.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RetrievalError(f"cannot read the corpus version: {exc}") from exc
        try:
            state = CorpusState.from_payload(json.loads(text))
        except (ValueError, KeyError, AttributeError) as exc:
            bad = f"the corpus record {self._folder}/corpus.json is bad: {exc}"
            raise RetrievalError(bad) from exc
        self._adopt(state)
        return state

    async def write_state(self, state: CorpusState) -> None:
        async with self._writes:  # not while the shard is being copied
            try:
                self._shard.flush()  # the points the record describes are on disk before it
                _write_atomic(self._folder / "corpus.json", json.dumps(state.to_payload()))
            except Exception as exc:
                raise RetrievalError(f"cannot record the corpus version: {exc}") from exc
        self._adopt(state)

    def _adopt(self, state: CorpusState | None) -> None:
        """Search sees what the record last read or written makes visible."""
        self._visible_rule = visible(state)
        self._visible = edge_filter(self._visible_rule)

    # -- search

    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]:
        request = qe.QueryRequest(
            query=qe.Query.Nearest(vector.tolist()),
            filter=self._visible,
            limit=k,
            with_payload=True,
            params=self._params,
        )
        try:
            points = self._shard.query(request)
        except Exception as exc:
            raise RetrievalError(f"vector search failed: {exc}") from exc
        return [
            ScoredChunk(chunk=chunk_from_payload(p.payload or {}), score=float(p.score))
            for p in points
        ]

    async def count(self, doc_id: str | None = None) -> int:
        """Chunks search sees (of ``doc_id`` only, when given)."""
        if doc_id is None:
            return self._count(self._visible, "count the collection")
        selector = models.Filter(must=[matches("doc_id", doc_id), self._visible_rule])
        return self._count(edge_filter(selector), "count the collection")

    # -- writes (``rag.protocols.DocumentStore``)

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Vector], generations: Mapping[str, str]
    ) -> None:
        points = [
            qe.Point(
                chunk_point_id(c, generations[c.doc_id]),
                v.tolist(),
                _payload(point_payload(c, generations[c.doc_id])),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        await self._update(qe.UpdateOperation.upsert_points(points), "write to the vector DB")

    async def restore(self, points: list[qe.Point]) -> None:
        """Write points as another store kept them (a migration)."""
        await self._update(qe.UpdateOperation.upsert_points(points), "write to the vector DB")

    async def stored(self) -> list[dict[str, Any]]:
        """Every point's payload, seen by search or not (tests, diagnostics; a small store)."""
        records, _ = self._shard.scroll(qe.ScrollRequest(limit=100_000, with_payload=True))
        return [r.payload or {} for r in records]

    async def written(self, generations: Iterable[str]) -> int:
        return self._count(edge_filter(in_generations(generations)), "count written points")

    async def discard(self, generations: Iterable[str]) -> int:
        return await self._delete(edge_filter(in_generations(generations)))

    async def collect(self, doc_id: str, kept: str | None, revealed: Sequence[str]) -> int:
        if kept is not None:
            unstage = qe.UpdateOperation.set_payload_by_filter(
                edge_filter(in_generations([kept])),
                _payload({"staged": False}),
            )
            await self._update(unstage, f"collect document {doc_id!r}")
        return await self._delete(edge_filter(superseded(doc_id, kept, revealed)))

    async def drop_unswitched(self, revealed: Sequence[str]) -> int:
        return await self._delete(edge_filter(unswitched(revealed)))

    async def _delete(self, selector: qe.Filter) -> int:
        found = self._count(selector, "find points to delete")
        if found:
            operation = qe.UpdateOperation.delete_points_by_filter(selector)
            await self._update(operation, "delete from the vector DB")
        return found

    def _count(self, selector: qe.Filter, what: str) -> int:
        try:
            return self._shard.count(qe.CountRequest(exact=True, filter=selector))
        except Exception as exc:
            raise RetrievalError(f"cannot {what}: {exc}") from exc

    async def _update(self, operation: qe.UpdateOperation, what: str) -> None:
        async with self._writes:
            try:
                self._shard.update(operation)
            except Exception as exc:
                raise RetrievalError(f"cannot {what}: {exc}") from exc
            if self._journal is not None:
                self._journal.append(operation)
            self._last_write = time.monotonic()
        self.index_soon()

    # -- the index

    @property
    def building(self) -> bool:
        """An index build is under way (its writes are journaled)."""
        return self._journal is not None

    def unindexed(self) -> int:
        info = self._shard.info()
        return max(0, info.points_count - info.indexed_vectors_count)

    def index_soon(self) -> None:
        """Start the indexer unless it runs: it builds the index once writes are quiet, if
        enough points are unindexed."""
        idle = self._indexer is None or self._indexer.done()
        if idle and self.unindexed() >= self._index_after:
            self._indexer = asyncio.create_task(self._index(), name="edge-index")

    async def wait_indexed(self) -> None:
        """Until the build that is due (if any) is done (tests, scripts)."""
        while self._indexer is not None and not self._indexer.done():
            await asyncio.shield(self._indexer)

    async def _index(self) -> None:
        while (wait := self._last_write + self._quiet_s - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if (pending := self.unindexed()) < self._index_after:
            return
        target = self._folder / f"shard-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        log.info("building the vector index over %d new points", pending)
        try:
            async with self._writes:
                self._shard.flush()
                await asyncio.to_thread(shutil.copytree, self._live, target)
                self._journal = []
            await _build_in_child(target, self._dimension)
            async with self._writes:
                built = _load(target)
                for operation in self._journal:
                    built.update(operation)
                _write_atomic(self._folder / "current", target.name)
                old, self._shard = self._shard, built
                target, self._live = self._live, target  # what is left to remove: the old one
            old.close()
            self.builds += 1
            log.info("vector index built in %.1f s", time.monotonic() - started)
        except Exception as exc:
            log.warning("the vector index build failed (search stays exact): %s", exc)
        finally:
            self._journal = None
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, target, True))

    async def aclose(self) -> None:
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
        self._shard.flush()
        self._shard.close()


async def migrate_local_mode(
    source: Path, collection: str, target: Path, make: Callable[[Path], EdgeRetriever]
) -> int:
    """Copy ``collection`` of a qdrant-client local-mode folder (the embedded store before
    Qdrant Edge) with its corpus record into a new store at ``target`` (``make`` opens one);
    ``source`` is left as it was. ``target`` appears only once the copy is whole. How many
    points were copied."""
    staging = target.with_name(target.name + ".migrating")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        client = AsyncQdrantClient(path=str(source))
    except RuntimeError as exc:  # local mode locks its folder to one process
        raise RetrievalError(f"cannot migrate {source}: it is in use ({exc})") from exc
    try:
        state = await QdrantRetriever(
            client=client, collection=collection, dimension=0
        ).read_state()
        store = make(staging)
        try:
            moved, offset = 0, None
            while True:
                records, offset = await client.scroll(
                    collection, limit=512, offset=offset, with_payload=True, with_vectors=True
                )
                points = [
                    qe.Point(str(r.id), r.vector, _payload(r.payload or {}))  # type: ignore[arg-type]
                    for r in records
                ]
                if points:
                    await store.restore(points)
                moved += len(points)
                if offset is None:
                    break
            if state is not None:
                await store.write_state(state)
        finally:
            await store.aclose()
    finally:
        await client.close()
    os.replace(staging, target)
    return moved


async def _build_in_child(path: Path, dimension: int) -> None:
    """Build the index of the shard copy at ``path`` in a child process (see the module doc)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rag.edge",
        str(path),
        str(dimension),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await child.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise
    if child.returncode != 0:
        raise RuntimeError(f"the index builder exited {child.returncode}: {err.decode()[-500:]}")


def _build(path: str, dimension: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(10)  # the service that spawned us comes first
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the service
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        return  # the service died before we could ask to die with it
    # Built with the current configuration: a store made by an earlier version (without int8
    # copies, say) gets them with its next build.
    shard = qe.EdgeShard.load(path, shard_config(dimension))
    shard.optimize()
    shard.flush()
    shard.close()


if __name__ == "__main__":
    _build(sys.argv[1], int(sys.argv[2]))

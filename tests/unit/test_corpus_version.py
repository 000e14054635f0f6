"""The corpus version lives with the corpus (issue #21): recorded in the vector store, followed by
every process, never taken from Redis."""

from __future__ import annotations

import asyncio

import pytest

from rag.corpus_version import CorpusVersion
from rag.errors import RetrievalError
from tests.unit.fakes import VersionStoreInMemory


def process(store: VersionStoreInMemory, poll_s: float = 0.05) -> CorpusVersion:
    return CorpusVersion(store=store, redis=None, namespace="ns", collection="docs", poll_s=poll_s)


async def test_a_new_corpus_gets_a_version_recorded_in_the_store() -> None:
    store = VersionStoreInMemory()
    first = await process(store).start()
    assert store.version == first
    assert await process(store).start() == first  # a second process reads it, draws none


async def test_a_change_is_current_at_once_here_and_within_the_poll_elsewhere() -> None:
    store = VersionStoreInMemory()
    here, there = process(store), process(store)
    await here.start()
    await there.start()
    follower = asyncio.create_task(there.follow())
    try:
        bumped = await here.bump()
        assert here.current == bumped == store.version
        async with asyncio.timeout(1.0):  # the bound: poll_s (0.05 s) plus a read
            while there.current != bumped:
                await asyncio.sleep(0.01)
    finally:
        follower.cancel()


async def test_a_change_the_store_did_not_record_is_an_error_and_changes_nothing() -> None:
    store = VersionStoreInMemory()
    version = process(store)
    first = await version.start()
    store.down = True
    with pytest.raises(RetrievalError):
        await version.bump()
    assert version.current == first  # not acknowledged, not current


async def test_a_store_that_cannot_be_read_keeps_the_last_known_version() -> None:
    store = VersionStoreInMemory()
    version = process(store)
    first = await version.start()
    store.down = True
    await version.refresh()
    assert version.current == first

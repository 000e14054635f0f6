"""The pipeline's cache decisions, every mode x hit/miss/stale/corrupt per layer, on fakes."""

from __future__ import annotations

import asyncio

import pytest

from rag.errors import InvalidInputError, LLMError, OverloadedError
from rag.pipeline import StreamEnd, StreamStart, StreamToken
from rag.shedding import GenerationLimiter
from rag.types import AskOptions, CacheMode
from tests.scripted_llm import WORDS
from tests.unit.conftest import MakeRig

Q = "How long are answers cached?"
HIT3 = {"embedding": "hit", "search": "hit", "llm": "hit"}
MISS3 = {"embedding": "miss", "search": "miss", "llm": "miss"}
BYPASS3 = {"embedding": "bypass", "search": "bypass", "llm": "bypass"}


def opts(mode: CacheMode = CacheMode.DEFAULT, top_k: int = 2) -> AskOptions:
    return AskOptions(top_k=top_k, mode=mode)


async def test_miss_then_exact_hit_in_one_round_trip(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    first = await rig.pipeline.answer(Q, opts())
    assert first.cache.as_dict() == MISS3
    assert first.text == "".join(WORDS)
    assert first.usage.completion_tokens == len(WORDS)
    trips = rig.store.round_trips
    second = await rig.pipeline.answer(Q, opts())
    assert second.cache.as_dict() == HIT3
    assert second.text == first.text
    assert second.usage.prompt_tokens == second.usage.completion_tokens == 0
    assert rig.store.round_trips - trips == 1  # one MGET: version, embedding, search, answer
    assert (rig.llm.calls, rig.embedder.calls, rig.retriever.calls) == (1, 1, 1)


async def test_hit_counts_tokens_and_layer_metrics(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts())
    await rig.pipeline.answer(Q, opts())
    snapshot = rig.metrics.snapshot()
    assert snapshot["tokens_saved"] == 20 + len(WORDS)
    assert snapshot["layers"]["llm"]["hit"] == 1 and snapshot["layers"]["llm"]["miss"] == 1
    assert set(snapshot["layers"]) == {"embedding", "search", "llm", "rewrite"}


async def test_no_cache_reads_nothing_but_writes(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts())
    fresh = await rig.pipeline.answer(Q, opts(CacheMode.NO_CACHE))
    assert fresh.cache.as_dict() == BYPASS3
    assert rig.llm.calls == 2
    assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == HIT3


async def test_no_store_reads_but_writes_nothing(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    first = await rig.pipeline.answer(Q, opts(CacheMode.NO_STORE))
    assert first.cache.as_dict() == MISS3
    assert not [k for k in await rig.keys() if ":corpus:" not in k]
    again = await rig.pipeline.answer(Q, opts(CacheMode.NO_STORE))
    assert again.cache.as_dict() == MISS3
    assert rig.llm.calls == 2


async def test_refresh_recomputes_and_overwrites(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts())
    refreshed = await rig.pipeline.answer(Q, opts(CacheMode.REFRESH))
    assert refreshed.cache.as_dict() == BYPASS3
    assert (rig.llm.calls, rig.retriever.calls) == (2, 2)
    assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == HIT3


@pytest.mark.parametrize("layer", ["embedding", "search", "llm"])
async def test_corrupt_entry_is_a_miss_and_is_deleted(rig_factory: MakeRig, layer: str) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts())
    segment = {"embedding": ":emb:", "search": ":search:", "llm": ":llm:"}[layer]
    (key,) = [k for k in await rig.keys() if segment in k]
    await rig.store.set(key, b"\xff garbage", 60)
    result = await rig.pipeline.answer(Q, opts())
    assert result.cache.as_dict()[layer] == "miss"
    assert result.text == "".join(WORDS)
    if layer == "embedding":  # deleted; not recomputed, since the search result was a hit
        assert key not in await rig.keys()
    else:  # recomputed and written again
        assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == HIT3


async def test_a_new_corpus_version_makes_search_and_answers_miss(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts())
    await rig.pipeline.corpus_version.bump()
    answer = await rig.pipeline.answer(Q, opts())
    assert answer.cache.as_dict() == {"embedding": "hit", "search": "miss", "llm": "hit"}
    assert rig.retriever.calls == 2  # searched again under the new version


async def test_stale_answer_is_served_and_refreshed_once_in_background(
    rig_factory: MakeRig,
) -> None:
    rig = rig_factory(soft_ttl_s=1)
    await rig.pipeline.answer(Q, opts())
    (key,) = await rig.keys(":llm:")
    await rig.make_stale(key)
    served = await asyncio.gather(*(rig.pipeline.answer(Q, opts()) for _ in range(3)))
    assert all(s.cache.as_dict()["llm"] == "hit" for s in served)
    await rig.pipeline.background.settle()
    assert rig.llm.calls == 2  # one background regeneration for three stale hits


async def test_no_store_never_refreshes_a_stale_answer(rig_factory: MakeRig) -> None:
    rig = rig_factory(soft_ttl_s=1)
    await rig.pipeline.answer(Q, opts())
    (key,) = await rig.keys(":llm:")
    await rig.make_stale(key)
    assert (await rig.pipeline.answer(Q, opts(CacheMode.NO_STORE))).cache.as_dict() == HIT3
    await rig.pipeline.background.settle()  # nothing was started in the background
    assert rig.llm.calls == 1


async def test_sliding_ttl_extends_a_read_embedding(rig_factory: MakeRig) -> None:
    rig = rig_factory(sliding=True)
    await rig.pipeline.answer(Q, opts())
    (key,) = await rig.keys(":emb:")
    await rig.store.set(key, (await rig.store.get_many([key]))[0] or b"", 5)
    await rig.pipeline.answer(Q, opts())
    await rig.pipeline.background.settle()  # the extension was sent in the background
    ttl = await rig.ttl(key)
    assert ttl is not None and ttl > 3000


async def test_identical_concurrent_misses_make_one_of_each_call(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    results = await asyncio.gather(*(rig.pipeline.answer(Q, opts()) for _ in range(8)))
    assert {r.text for r in results} == {"".join(WORDS)}
    assert (rig.llm.calls, rig.embedder.calls, rig.retriever.calls) == (1, 1, 1)
    assert sum(r.usage.completion_tokens for r in results) == len(WORDS)  # spent once


async def test_without_single_flight_each_miss_calls(rig_factory: MakeRig) -> None:
    rig = rig_factory(flight=False)
    await asyncio.gather(*(rig.pipeline.answer(Q, opts()) for _ in range(3)))
    assert rig.llm.calls == 3


async def test_store_down_serves_uncached_answers(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.outage(True)
    results = await asyncio.gather(*(rig.pipeline.answer(Q, opts()) for _ in range(4)))
    assert all(r.cache.as_dict() == BYPASS3 for r in results)
    assert {r.text for r in results} == {"".join(WORDS)}
    assert rig.llm.calls == 1  # coalesced in this process without Redis
    await rig.outage(False)
    assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == MISS3


async def test_llm_failure_caches_nothing(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    with pytest.raises(LLMError):
        await rig.pipeline.answer("please fail", opts())
    assert not await rig.keys(":llm:")
    with pytest.raises(LLMError):
        await rig.pipeline.answer("please fail", opts())
    assert rig.llm.calls == 2


async def test_broken_stream_caches_nothing(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    with pytest.raises(LLMError):
        await rig.pipeline.answer("break", opts())
    assert not await rig.keys(":llm:")


async def test_stream_events_in_order_and_replay_as_pieces(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    events = [e async for e in rig.pipeline.stream(Q, opts())]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    replay = [e async for e in rig.pipeline.stream(Q, opts())]
    tokens = [e.text for e in replay if isinstance(e, StreamToken)]
    assert tokens == WORDS  # the original pieces, not one blob
    assert replay[0].cache.as_dict() == HIT3  # type: ignore[union-attr]


async def test_a_stream_left_early_stores_nothing(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    events = rig.pipeline.stream("slow question", opts())
    async for event in events:
        if isinstance(event, StreamToken):
            break
    await events.aclose()
    await asyncio.sleep(0.2)
    assert not await rig.keys(":llm:")


async def test_timings_count_total_once(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    answer = await rig.pipeline.answer(Q, opts())
    total = rig.metrics.registry.get_sample_value("rag_stage_seconds_count", {"stage": "total"})
    assert total == 1
    assert answer.timings_ms["total"] >= answer.timings_ms["llm"]


@pytest.mark.parametrize(
    ("query", "options", "message"),
    [
        ("   ", opts(), "empty"),
        ("x" * 201, opts(), "longer than 200"),
        (Q, opts(top_k=0), "top_k"),
        (Q, opts(top_k=6), "top_k"),
        (Q, AskOptions(top_k=2, semantic=True), "semantic cache is off"),
    ],
)
async def test_invalid_requests_are_refused_before_any_work(
    rig_factory: MakeRig, query: str, options: AskOptions, message: str
) -> None:
    rig = rig_factory()
    with pytest.raises(InvalidInputError, match=message):
        await rig.pipeline.answer(query, options)
    assert rig.store.round_trips == rig.llm.calls == 0


async def test_different_top_k_are_different_entries(rig_factory: MakeRig) -> None:
    rig = rig_factory()
    await rig.pipeline.answer(Q, opts(top_k=1))
    other = await rig.pipeline.answer(Q, opts(top_k=2))
    assert other.cache.as_dict() == {"embedding": "hit", "search": "miss", "llm": "miss"}


async def test_generations_past_the_bound_are_shed_but_hits_flow(rig_factory: MakeRig) -> None:
    rig = rig_factory(limiter=GenerationLimiter(max_running=1, max_waiting=1, retry_after_s=3))
    await rig.pipeline.answer(Q, opts())  # cached now
    slow = [asyncio.create_task(rig.pipeline.answer(f"slow question {i}", opts())) for i in (1, 2)]
    await asyncio.sleep(0.05)
    with pytest.raises(OverloadedError) as refused:
        await rig.pipeline.answer("slow question 3", opts())
    assert refused.value.retry_after_s == 3
    follower = asyncio.create_task(rig.pipeline.answer("slow question 1", opts()))
    assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == HIT3  # never shed
    await asyncio.gather(*slow, follower)
    assert rig.llm.calls == 3  # question 1 (shared with its follower), 2, and the first
    await rig.pipeline.answer("slow question 3", opts())  # room again


async def test_a_new_question_is_shed_before_its_embedding_when_every_place_is_taken(
    rig_factory: MakeRig,
) -> None:
    """A burst of new questions: each refused at once, not after the embedding model (one
    thread, ~20 ms a question) got to it."""
    rig = rig_factory(limiter=GenerationLimiter(max_running=1, max_waiting=0, retry_after_s=3))
    await rig.pipeline.answer(Q, opts())  # cached now
    slow = asyncio.create_task(rig.pipeline.answer("slow question 1", opts()))
    await asyncio.sleep(0.05)
    embedded = rig.embedder.calls
    with pytest.raises(OverloadedError):
        await rig.pipeline.answer("a question never asked", opts())
    assert rig.embedder.calls == embedded  # refused before its embedding
    assert (await rig.pipeline.answer(Q, opts())).cache.as_dict() == HIT3  # never shed
    await slow


async def test_a_stream_closed_after_its_start_gives_its_place_back(rig_factory: MakeRig) -> None:
    limiter = GenerationLimiter(max_running=1, max_waiting=0, retry_after_s=1)
    rig = rig_factory(limiter=limiter)
    events = rig.pipeline.stream(Q, opts())
    assert isinstance(await anext(events), StreamStart)
    await events.aclose()
    assert limiter.admitted == 0

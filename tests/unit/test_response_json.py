"""The cached path's hand-built response body says exactly what ``AskResponse`` says."""

from __future__ import annotations

import json

import pytest

from rag.sessions import TurnPlan
from rag.types import Answer, CacheStatus, Chunk, LayerStatuses, ScoredChunk, SemanticInfo, Usage
from services.schemas import AskResponse, ask_response_json


def _answer(semantic: SemanticInfo | None) -> Answer:
    chunk = Chunk(
        doc_id="café.md", chunk_id="café.md#0", text='Ünïcode "quotes", \\\\ and a\\nnewline',
        source="café.md", content_hash="abc",
    )  # fmt: skip
    return Answer(
        text="Réponse \u2013 1 h.\n",
        sources=[ScoredChunk(chunk=chunk, score=0.7116107443581997)] * 3,
        cache=LayerStatuses(embedding=CacheStatus.HIT, search=CacheStatus.HIT, llm=CacheStatus.HIT),
        usage=Usage(prompt_tokens=0, completion_tokens=0),
        timings_ms={"cache_lookup": 0.573, "total": 1.25},
        semantic=semantic,
    )


@pytest.mark.parametrize("semantic", [None, SemanticInfo(0.97, "Wie lange?")])
@pytest.mark.parametrize("turn", [None, TurnPlan("s-1", "and then?", "What then?")])
def test_the_spliced_body_equals_the_model(
    semantic: SemanticInfo | None, turn: TurnPlan | None
) -> None:
    answer = _answer(semantic)
    expected = AskResponse.of(answer, turn).model_dump_json()
    body = ask_response_json(answer, turn)
    assert json.loads(body) == json.loads(expected)
    assert list(json.loads(body)) == list(json.loads(expected))  # same field order
    assert body == expected.encode()  # byte for byte, here (floats may differ only in notation)
    assert ask_response_json(answer, turn) == body  # and again from the memo

"""The prompt's context with the real MiniLM: the sentence that answers is the one kept."""

from __future__ import annotations

from rag.embedding import SentenceTransformerEmbedder
from rag.prompt import PromptBuilder
from rag.types import Chunk, ScoredChunk


def passage(doc: str, text: str) -> ScoredChunk:
    chunk = Chunk(doc_id=doc, chunk_id=f"{doc}#0", text=text, source=f"{doc}.md", content_hash=doc)
    return ScoredChunk(chunk=chunk, score=0.5)


SOURCES = [
    passage(
        "layers",
        "Every question goes through three stages. The embedding of a question is kept for seven "
        "days, since a model's vectors never change. Search results are kept for one hour.",
    ),
    passage(
        "answers",
        "The answer cache stores what the model generated. Its time to live is one hour, and a "
        "partial answer is never stored. Streams are replayed over server-sent events.",
    ),
    passage(
        "faults",
        "When Redis is down, requests bypass the cache and still get answers. A refused "
        "connection opens a circuit breaker for one second.",
    ),
]


async def test_the_answering_sentence_is_kept_under_its_passage(
    embedder: SentenceTransformerEmbedder,
) -> None:
    builder = PromptBuilder(embedder, 2)
    context = dict(await builder.context("How long are generated answers cached?", SOURCES))
    assert "Its time to live is one hour, and a partial answer is never stored." in context[2]
    assert 3 not in context  # the fault passage says nothing about it
    context = dict(await builder.context("What happens when Redis is down?", SOURCES))
    assert context[3].startswith("When Redis is down, requests bypass the cache")

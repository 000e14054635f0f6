"""The prompt's context: whole passages, or the sentences nearest the question."""

from __future__ import annotations

from rag.prompt import PromptBuilder, build_messages, prompt_version, sentences
from rag.types import Chunk, ScoredChunk
from tests.unit.fakes import HashEmbedder


def passage(doc: str, text: str) -> ScoredChunk:
    chunk = Chunk(doc_id=doc, chunk_id=f"{doc}#0", text=text, source=f"{doc}.md", content_hash=doc)
    return ScoredChunk(chunk=chunk, score=0.5)


SOURCES = [
    passage("a", "## Answer cache\nAnswers are kept for one hour. A partial answer is never kept."),
    passage("b", "| layer | TTL |\n|---|---|\n| embedding | 7 days |\nVectors never change."),
    passage("c", "The near cache keeps copies in memory. It is bounded by bytes."),
]


def test_sentences_are_read_as_prose() -> None:
    assert sentences(SOURCES[0].chunk.text) == [
        "Answer cache Answers are kept for one hour.",
        "A partial answer is never kept.",
    ]
    # a table row is a sentence of its cells; the header row has too few words to count
    assert sentences(SOURCES[1].chunk.text) == ["embedding, 7 days.", "Vectors never change."]


async def test_the_nearest_sentences_keep_their_passage_number_and_reading_order() -> None:
    embedder = HashEmbedder()
    question = "It is bounded by bytes."  # the hash embedder: equal texts, equal vectors
    context = await PromptBuilder(embedder, 2).context(question, SOURCES)
    assert embedder.calls == 1  # the question and every sentence in one call
    numbers = [number for number, _ in context]
    assert numbers == sorted(numbers)  # passages in their order, under their own numbers
    assert sum(len(sentences(text)) for _, text in context) == 2
    (text,) = [text for number, text in context if number == 3]
    assert text.endswith("It is bounded by bytes.")  # the nearest (identical) sentence is kept


async def test_a_vector_at_hand_is_not_embedded_again() -> None:
    embedder = HashEmbedder()
    (vector,) = await embedder.embed(["Vectors never change."])
    context = await PromptBuilder(embedder, 1).context("ignored", SOURCES, vector)
    assert embedder.calls == 2 and context == [(2, "Vectors never change.")]


async def test_few_sentences_or_none_asked_for_leave_the_passages_whole() -> None:
    embedder = HashEmbedder()
    whole = build_messages("q?", SOURCES)
    assert await PromptBuilder(embedder, 0).messages("q?", SOURCES) == whole
    assert await PromptBuilder(embedder, 50).context("q?", SOURCES) == [
        (i, " ".join(sentences(s.chunk.text))) for i, s in enumerate(SOURCES, start=1)
    ]
    assert embedder.calls == 0  # nothing to choose between


def test_the_context_rule_is_part_of_the_answer_key() -> None:
    assert prompt_version(0) != prompt_version(5) != prompt_version(3)
    # the model that chooses the sentences too, when it chooses them
    assert prompt_version(5, "all-MiniLM-L6-v2") != prompt_version(5, "another-model")
    assert prompt_version(0, "all-MiniLM-L6-v2") == prompt_version(0, "another-model")

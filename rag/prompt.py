"""The prompt: its template, and the context an answer is generated from.

Its version, a hash of its text and the context rule (``RAG_CONTEXT_SENTENCES`` and the
embedding model that chooses the sentences) are part of every answer key, so an edit moves
answers to new keys even if someone forgets to bump ``PROMPT_VERSION`` (bump it when the
sentence selection below changes)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from rag.protocols import Embedder, Vector
from rag.types import ScoredChunk

PROMPT_VERSION = "v3"

# For a small model: short, and in the passages' own words (scripts/eval_answers.py measured it).
SYSTEM_PROMPT = (
    "Answer the question in one or two short sentences, using the words of the numbered "
    "context passages. If they do not contain the answer, say so."
)
USER_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"

_MARKUP = re.compile(r"^\s*(#+|[-*>]|\d+\.)\s+|`+|\*\*|\[\d+\]")
_TABLE_RULE = re.compile(r"^\|?[\s:|-]+\|?$")  # |---|:---|
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+")
_WORD = re.compile(r"[A-Za-z0-9']+")


def prompt_version(sentences: int = 0, embedding_model: str = "") -> str:
    """``PROMPT_VERSION``, a short hash of the template text and the context rule (with the
    embedding model that chooses the sentences, when it does)."""
    parts = [SYSTEM_PROMPT, USER_TEMPLATE, *([embedding_model] if sentences > 0 else [])]
    text_hash = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    rule = f"-s{sentences}" if sentences > 0 else ""
    return f"{PROMPT_VERSION}-{text_hash[:8]}{rule}"


def plain_text(text: str) -> str:
    """A chunk as prose: table rows become their cells in a sentence; rules and fences go;
    heading and list markers, backticks, bold and bracketed numbers (a small model copies them
    as citations) are removed; lines are joined."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("```", "---")) or _TABLE_RULE.match(stripped):
            continue
        if stripped.startswith("|"):
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            stripped = ", ".join(cell for cell in cells if cell) + "."
        lines.append(_MARKUP.sub("", stripped))
    return " ".join(lines)


def sentences(text: str) -> list[str]:
    """A chunk's sentences of three words or more (a table row or a heading counts as one)."""
    return [s for s in _SENTENCE_END.split(plain_text(text)) if len(_WORD.findall(s)) >= 3]


def render(question: str, context: Sequence[tuple[int, str]]) -> list[dict[str, str]]:
    """The chat messages for ``question`` over numbered passages."""
    passages = "\n\n".join(f"[{number}] {text}" for number, text in context)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(context=passages, question=question)},
    ]


def build_messages(question: str, sources: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    """The messages with every retrieved passage whole."""
    return render(question, [(i, s.chunk.text) for i, s in enumerate(sources, start=1)])


class PromptBuilder:
    """The messages an answer is generated from. With ``sentences`` > 0 the context is not the
    retrieved passages whole but their ``sentences`` sentences nearest the question (cosine of
    the embedder's vectors), kept in reading order under their passage's number: a 135M model
    answers a short, focused context better and about three times faster
    (``scripts/eval_answers.py``). The sources an answer reports stay the passages."""

    def __init__(self, embedder: Embedder, sentences: int) -> None:
        self._embedder = embedder
        self._sentences = sentences
        self.version = prompt_version(sentences, embedder.model_id)  # in every answer key

    async def messages(
        self, question: str, sources: Sequence[ScoredChunk], vector: Vector | None = None
    ) -> list[dict[str, str]]:
        """``vector``: the question's, if the caller has it (else it is embedded too)."""
        return render(question, await self.context(question, sources, vector))

    async def context(
        self, question: str, sources: Sequence[ScoredChunk], vector: Vector | None = None
    ) -> list[tuple[int, str]]:
        whole = [(i, s.chunk.text) for i, s in enumerate(sources, start=1)]
        if self._sentences <= 0:
            return whole
        pieces = [(i, sentence) for i, text in whole for sentence in sentences(text)]
        if not pieces:  # nothing reads as a sentence: the passages as they are
            return whole
        if len(pieces) > self._sentences:
            texts = [text for _, text in pieces]
            embedded = await self._embedder.embed(
                texts if vector is not None else [question, *texts]
            )
            if vector is None:
                vector, *embedded = embedded
            scores = np.asarray(embedded, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)
            nearest = np.argsort(-scores, kind="stable")[: self._sentences]
            pieces = [pieces[j] for j in sorted(nearest.tolist())]
        numbers = sorted({i for i, _ in pieces})
        return [(n, " ".join(text for i, text in pieces if i == n)) for n in numbers]

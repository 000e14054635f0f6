"""The prompt template. Its version and a hash of its text are part of every answer key, so an
edit moves answers to new keys even if someone forgets to bump ``PROMPT_VERSION``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from rag.types import ScoredChunk

PROMPT_VERSION = "v2"

# For a small model: short, and in the passages' own words (scripts/eval_answers.py measured it).
SYSTEM_PROMPT = (
    "Answer the question in one or two short sentences, using the words of the numbered "
    "context passages. If they do not contain the answer, say so."
)
USER_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"


def prompt_version() -> str:
    """``PROMPT_VERSION`` plus a short hash of the template text."""
    text_hash = hashlib.sha256((SYSTEM_PROMPT + "\x00" + USER_TEMPLATE).encode()).hexdigest()
    return f"{PROMPT_VERSION}-{text_hash[:8]}"


def build_messages(question: str, sources: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    context = "\n\n".join(f"[{i}] {s.chunk.text}" for i, s in enumerate(sources, start=1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(context=context, question=question)},
    ]

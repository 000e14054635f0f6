"""The prompt template. Its version and a hash of its text are part of every answer key, so an
edit moves answers to new keys even if someone forgets to bump ``PROMPT_VERSION``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from rag.types import ScoredChunk

PROMPT_VERSION = "v2"

# For a small model: short, and in the passages' own words (scripts/eval_answers.py measured it).
SYSTEM_PROMPT = (
    "Answer the question in one or two short sentences, using the words of the numbered "
    "context passages. If they do not contain the answer, say so."
)
USER_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"


_MARKUP = re.compile(r"^\s*(#+|[-*>]|\d+\.)\s+|`+|\*\*|\[\d+\]")


_RULE = re.compile(r"^\|?[\s:|-]+\|?$")  # a table's header rule: |---|:---|


def plain_passage(text: str) -> str:
    """A chunk as prose for a small model: table rows become their cells in a sentence, rules
    and fences go, heading and list markers, backticks, bold and bracketed numbers (which it
    copies as citations) are removed, lines joined."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("```", "---")) or _RULE.match(stripped):
            continue
        if stripped.startswith("|"):  # a table row: its cells, as a sentence
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            stripped = ", ".join(cell for cell in cells if cell) + "."
        lines.append(_MARKUP.sub("", stripped))
    return " ".join(lines)


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

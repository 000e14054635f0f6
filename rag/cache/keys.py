"""Cache keys: ``rag:{namespace}:{layer}:{model}:...:{sha256}``.

Everything that changes a layer's output is either a readable key segment (namespace, layer,
model, corpus version, k) or folded into the trailing sha256 (text, prompt template, sampling
parameters, chunk ids and content hashes)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The form of a query that keys are built from: Unicode NFC, whitespace collapsed.

    Case and punctuation are kept: they can change an embedding (for cased models) and an answer.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def segment(value: str) -> str:
    """A model id or version made safe as one key segment (no ``:``, no braces, no spaces)."""
    return _UNSAFE.sub("_", value)


def digest(*parts: object) -> str:
    """sha256 over a canonical JSON encoding of ``parts`` (unambiguous, unlike joining)."""
    encoded = json.dumps(parts, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def semantic_events_channel(namespace: str) -> str:
    """Pub/sub channel on which semantic-cache entries added and deleted are announced."""
    return f"rag:{namespace}:sem-events"


def build_key(namespace: str, layer: str, model: str, *segments: str, sha: str) -> str:
    return ":".join(["rag", namespace, layer, segment(model), *map(segment, segments), sha])

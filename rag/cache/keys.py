"""Cache keys: ``rag:{namespace}:{layer}:{model}:...:{sha256}``.

Everything that changes a layer's output is either a readable key segment (namespace, layer,
model, corpus version, k) or folded into the trailing sha256 (text, prompt template, sampling
parameters, chunk ids and content hashes).

Redis Cluster: a key's slot is the hash of the whole key, unless it holds a *hash tag* (the text
between its first ``{`` and the next ``}``; ``segment`` removes braces, so cache keys never have
one): each entry lands on its own slot and a namespace spreads over every node. Keys that belong
together carry a hash tag: the coordination keys of one in-flight computation (its lock, refresh
lock and live answer stream, ``flight_key``) share ``{sha256 of the computed key}``, so they live
on one node and fail over together, while different flights spread out. No command sends keys of
several slots in one atomic step: multi-key reads are split by slot (``connect.get_many``)."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_SPACES = re.compile(r"\s+")


@functools.lru_cache(maxsize=16384)  # a hot question's keys are built on every request
def normalize_text(text: str) -> str:
    """The form of a query that keys are built from: Unicode NFC, whitespace collapsed.

    Case and punctuation are kept: they can change an embedding (for cased models) and an answer.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


@functools.lru_cache(maxsize=1024)
def segment(value: str) -> str:
    """A model id or version made safe as one key segment (no ``:``, no braces, no spaces)."""
    return _UNSAFE.sub("_", value)


def digest(*parts: object) -> str:
    """sha256 over a canonical JSON encoding of ``parts`` (unambiguous, unlike joining)."""
    encoded = json.dumps(parts, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def build_key(namespace: str, layer: str, model: str, *segments: str, sha: str) -> str:
    """A cache entry's key; ``layer`` is a ``registry.Layer.segment``."""
    return ":".join(["rag", namespace, layer, segment(model), *map(segment, segments), sha])


@functools.lru_cache(maxsize=16384)
def text_key(namespace: str, layer: str, model: str, *segments: str, text: str) -> str:
    """``build_key`` of a layer keyed on a query text alone (normalized); remembered, since the
    keys of a hot question are built again on every request."""
    return build_key(namespace, layer, model, *segments, sha=digest(normalize_text(text)))


def layer_pattern(namespace: str, layer_segment: str) -> str:
    """SCAN pattern matching every key of one layer (or the semantic index) in a namespace."""
    return f"rag:{namespace}:{layer_segment}:*"


def semantic_key(namespace: str, scope: str, query: str) -> str:
    """The semantic index entry of ``query`` (normalized) within ``scope``."""
    return f"rag:{namespace}:sem:{scope}:{digest(normalize_text(query))}"


def semantic_namespace(key: str) -> str | None:
    """The namespace of a semantic index entry's key; None for any other key."""
    parts = key.split(":", 3)
    return parts[1] if len(parts) == 4 and parts[0] == "rag" and parts[2] == "sem" else None


def semantic_veto_key(namespace: str, query: str, entry_key: str) -> str:
    """Set when a user marked the answer of the semantic entry ``entry_key`` incorrect for
    ``query`` (normalized): that question no longer receives that answer."""
    return f"rag:{namespace}:semveto:{digest(normalize_text(query), entry_key)}"


def semantic_outcomes_key(namespace: str, scope: str) -> str:
    """The judged semantic candidates of a rule scope (``rag.semantic.outcomes``)."""
    return f"rag:{namespace}:semq:{scope}"


def feedback_key(namespace: str, request_id: str) -> str:
    """The verdict given on one answer (``rag.feedback``)."""
    return f"rag:{namespace}:fb:{digest(request_id)}"


def semantic_events_channel(namespace: str) -> str:
    """Pub/sub channel on which semantic-cache entries added and deleted are announced."""
    return f"rag:{namespace}:sem-events"


def flight_done_channel(namespace: str) -> str:
    """Pub/sub channel on which a single-flight leader announces that it finished."""
    return f"rag:{namespace}:flight-done"


def corpus_version_channel(namespace: str, collection: str) -> str:
    """Pub/sub channel on which a process announces that it changed the corpus version (which
    itself lives in the vector store: ``rag.corpus_version``)."""
    return f"rag:{namespace}:corpus:{segment(collection)}:changed"


def tag_key(namespace: str, tag: str) -> str:
    """The sorted set of entry keys tagged ``tag`` (e.g. ``doc:<doc_id>``)."""
    return f"rag:{namespace}:tag:{tag}"


def session_key(namespace: str, session_id: str) -> str:
    return f"rag:{namespace}:session:{session_id}"


def flight_key(namespace: str, key: str, part: str) -> str:
    """Coordination key ``part`` (``lock``, ``refresh``, ``live``) of the computation of ``key``:
    ``rag:{namespace}:flight:{<sha256 of key>}:<part>``, the braces being a hash tag."""
    return f"rag:{namespace}:flight:{{{digest(key)}}}:{part}"

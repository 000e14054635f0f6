"""Serialisation of cache entries: JSON with a schema version, and a fixed binary layout for
vectors. Never pickle. Anything that does not decode exactly raises ``CorruptEntryError``; the
caller treats it as a miss and deletes the entry."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from rag.protocols import Vector

SCHEMA_VERSION = 1
# Vector layout: schema byte, then dimension as little-endian uint16, then float32 LE values.
_VECTOR_HEADER = struct.Struct("<BH")


class CorruptEntryError(ValueError):
    """A stored value is not a valid entry of the expected kind and schema version."""


def encode_vector(vector: Vector) -> bytes:
    values = np.ascontiguousarray(vector, dtype="<f4")
    return _VECTOR_HEADER.pack(SCHEMA_VERSION, values.shape[0]) + values.tobytes()


def decode_vector(raw: bytes, dimension: int) -> Vector:
    if len(raw) != _VECTOR_HEADER.size + 4 * dimension:
        raise CorruptEntryError(
            f"vector entry has {len(raw)} bytes, expected dimension {dimension}"
        )
    schema, dim = _VECTOR_HEADER.unpack_from(raw)
    if schema != SCHEMA_VERSION or dim != dimension:
        raise CorruptEntryError(f"vector entry schema {schema} dimension {dim}")
    vector = np.frombuffer(raw, dtype="<f4", offset=_VECTOR_HEADER.size).astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise CorruptEntryError("vector entry holds non-finite values")
    return vector


def encode_json(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps(
        {"schema": SCHEMA_VERSION, "kind": kind, **body}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def decode_json(raw: bytes, kind: str) -> dict[str, Any]:
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptEntryError(f"{kind} entry is not JSON") from exc
    if not isinstance(entry, dict):
        raise CorruptEntryError(f"{kind} entry is not a JSON object")
    if entry.get("schema") != SCHEMA_VERSION or entry.get("kind") != kind:
        raise CorruptEntryError(
            f"expected a {kind} entry of schema {SCHEMA_VERSION}, "
            f"got {entry.get('kind')!r} of schema {entry.get('schema')!r}"
        )
    return entry

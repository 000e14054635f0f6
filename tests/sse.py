"""A small SSE reader for tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def iter_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event = ""
    for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])


def parse(body: str) -> list[tuple[str, dict[str, Any]]]:
    return list(iter_events(body.splitlines()))

"""asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_CLEANUPS: set[asyncio.Task[Any]] = set()  # strong references until they finish


async def finish_even_if_cancelled(cleanup: Coroutine[Any, Any, Any]) -> None:
    """Await ``cleanup``, which goes on to completion even if the calling task is cancelled
    meanwhile (a client disconnect cancels the request's task, and a lock or a live stream
    must still be released or closed)."""
    task = asyncio.ensure_future(cleanup)
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)

"""Invalidation precision: after one document changes, how many cached answers that did not use
it stay hits, and how many that did use it are served stale (must be 0).

Ingests the sample corpus plus a set of short fact documents, asks one question per fact (and
the sample questions) with the default top_k, replaces one document, and asks everything again.
Real parts throughout (embedded Valkey, Qdrant local mode, MiniLM, local SmolLM2).

Usage: python scripts/bench_invalidation.py [--facts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import httpx

from rag.settings import Settings
from services.app import create_app

ROOMS = [
    "library",
    "kitchen",
    "studio",
    "workshop",
    "archive",
    "gallery",
    "laboratory",
    "greenhouse",
    "cinema",
    "chapel",
    "gym",
    "garage",
    "attic",
    "cellar",
    "observatory",
    "conservatory",
    "nursery",
    "pantry",
    "armory",
    "aviary",
]
COLORS = [
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "grey",
    "pink",
    "brown",
    "teal",
    "gold",
    "silver",
    "navy",
    "olive",
    "maroon",
    "beige",
    "coral",
    "ivory",
]


async def main(n: int) -> None:
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="inval-")),
        namespace=f"inval-{uuid.uuid4().hex[:6]}",
        llm_max_tokens=16,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=300) as c:
            for room, color in zip(ROOMS[:n], COLORS, strict=False):
                text = f"The door of the {room} is painted {color}. It was painted last spring."
                r = await c.post("/documents", json={"doc_id": room, "text": text})
                r.raise_for_status()
            questions = [f"What colour is the door of the {room}?" for room in ROOMS[:n]]
            used: dict[str, set[str]] = {}
            for q in questions:
                body = (await c.post("/ask", json={"query": q})).json()
                used[q] = {s["doc_id"] for s in body["sources"]}
            changed = ROOMS[0]
            r = await c.post(
                "/documents",
                json={
                    "doc_id": changed,
                    "text": f"The door of the {changed} is painted violet now.",
                },
            )
            r.raise_for_status()
            stayed = unaffected = stale = affected = 0
            for q in questions:
                body = (await c.post("/ask", json={"query": q})).json()
                hit = body["cache"]["llm"] == "hit"
                if changed in used[q]:
                    affected += 1
                    stale += hit
                else:
                    unaffected += 1
                    stayed += hit
    print(f"{len(questions)} cached answers; replaced document {changed!r}:")
    print(f"  answers built on it: {affected}, served stale afterwards: {stale} (target 0)")
    print(
        f"  answers not built on it: {unaffected}, still hits: {stayed} ({stayed / unaffected:.0%})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--facts", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(min(args.facts, len(ROOMS))))

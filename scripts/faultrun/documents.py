"""The watched documents: one per document-change fault, ingested before the load starts, with a
question among the hot ones (so its answer is cached) that only its text answers; and the
``POST /documents`` that ingests or replaces one.

A response to that question whose sources hold a text the document had before an acknowledged
change is a stale answer (``verdicts.stale_answers``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from .outcomes import DocumentChange


@dataclass(frozen=True, kw_only=True)
class WatchedDocument:
    fault: str  # the fault that replaces it
    doc_id: str
    question: str
    before: str  # its text when the run starts
    after: str  # its text once the fault replaced it


WATCHED = (
    WatchedDocument(
        fault="replace-refused",
        doc_id="fault-door",
        question="What colour is the office door painted?",
        before="The office door is painted bright red.",
        after="The office door is painted deep green.",
    ),
    WatchedDocument(
        fault="replace-rollback",
        doc_id="fault-garage",
        question="At what time does the parking garage close?",
        before="The parking garage closes at nine in the evening.",
        after="The parking garage closes at midnight.",
    ),
)


def watched(fault: str) -> WatchedDocument:
    return next(doc for doc in WATCHED if doc.fault == fault)


async def post_document(
    http: httpx.AsyncClient, doc: WatchedDocument, text: str, started: float
) -> DocumentChange:
    """``POST /documents`` with ``text`` as ``doc``'s; acknowledged when it answers 201. (The
    fault run's app has no admin key: ``servers.running_app`` sets none.)"""
    t0 = time.monotonic()
    change = DocumentChange(
        fault=doc.fault,
        doc_id=doc.doc_id,
        question=doc.question,
        old_texts=[t for t in (doc.before, doc.after) if t != text],
        new_text=text,
        at_s=t0 - started,
        status=0,
    )
    try:
        r = await http.post("/documents", json={"doc_id": doc.doc_id, "text": text})
    except httpx.HTTPError:
        return change
    change.status = r.status_code
    if r.status_code == 201:
        change.acked_at_s = time.monotonic() - started
        change.corpus_version = r.json()["corpus_version"]
    return change


async def ingest_watched(http: httpx.AsyncClient) -> None:
    """Ingest every watched document's first text (before the warm-up asks its question)."""
    for doc in WATCHED:
        change = await post_document(http, doc, doc.before, time.monotonic())
        if change.acked_at_s is None:
            raise SystemExit(f"could not ingest {doc.doc_id}: POST /documents {change.status}")

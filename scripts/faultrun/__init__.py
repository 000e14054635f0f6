"""The fault run: a bounded load on loopback, with faults in turn, and what clients saw.

It starts everything itself, on 127.0.0.1 only: a private ``redis-server`` (no snapshots or AOF
of its own; only the replace-rollback fault writes one, by ``SAVE``), and the app as a separate
``rag serve`` process using it (real MiniLM, Qdrant local mode, SmolLM2 on llama.cpp, sample
corpus, default deadlines, no admin key). Before the clock starts it ingests one watched document
per document-change fault (``documents.WATCHED``) and asks the hot questions once, so they are
cached: five about the sample corpus and one per watched document, answered from it.
``--clients`` clients then loop until the deadline, each request an ``/ask`` or an
``/ask/stream`` at random: ``--miss-clients`` of them ask questions never asked before
(embedding, search and generation), the others the hot questions. Meanwhile, at fixed points of
the run, in turn:

- **restart**: the Redis process is killed and started again, empty, ``--down-s`` later;
- **stall**: Redis answers nothing for ``--stall-s`` (``DEBUG SLEEP``);
- **replace-refused**: Redis refuses every write (``maxmemory`` 1, ``noeviction``), a watched
  document is replaced by ``POST /documents``, and Redis goes on refusing ``--refuse-s`` more;
- **replace-rollback**: Redis ``SAVE``s and is killed, the other watched document is replaced
  while it is down, and ``--down-s`` after the kill Redis starts again from that snapshot (the
  entries of before the change come back);
- **slow**: 5 streams of new questions read by clients that take ~0.5 s per 64 bytes, and 1 s
  after each, a normal client asks the same question by ``/ask``;
- **burst**: 200 distinct new questions at once by ``/ask``.

It reports requests by endpoint and status, 5xx other than the documented 503 (shed load), streams
cut without an ``error`` event, texts that differ from the answer they should equal, stale
answers, each document change (how long its POST took, when the new text was first served), LLM
calls for hot questions that were cached before each fault (in its window), hot-answer latency
during the stall, seconds until hits resume after each Redis return, the burst's 503 latency, and
the latency of cached answers (p50/p99) in each fault's window. A text differs when: a cached
answer (``llm: hit``) is not one generated for that question and those sources in the run (a
mixed-up key, a half-written entry, a stale replay); two requests of one question and sources
that overlapped in time both waited for a generation and got different texts (a follower that
diverged); a slow reader's text differs from that of the ``/ask`` that followed it. An answer is
stale when it was sent after a change of its document was acknowledged (201) and its sources
(``/ask``'s body, the stream's ``meta`` event) hold a text the document had before. Exit status 1
when any of these four counts is not 0, or a document change was not acknowledged.

Modules, one concern each: ``outcomes`` (what one request, one document change and the run
recorded), ``servers`` (the private Redis and the app), ``clients`` (requests and the steady
clients), ``documents`` (the watched documents and ``POST /documents``), ``faults`` (the faults
and their schedule), ``drive`` (warm-up, clients and faults over one run), ``verdicts`` (stale
answers, LLM calls for cached questions, the stall, Redis returns), ``summary`` (every figure
and the verdict) and ``cli`` (options, files, exit status). ``scripts/load.py`` runs it.

Usage: python scripts/load.py [--duration 60] [--clients 50] [--miss-clients 8]
       [--faults restart,stall,replace-refused,replace-rollback,slow,burst] [--down-s 2]
       [--stall-s 3] [--refuse-s 4] [--max-tokens 24] [--json results.json]
"""

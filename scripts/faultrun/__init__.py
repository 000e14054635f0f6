"""The fault run: a bounded load on loopback, with faults in turn, and what clients saw.

It starts everything itself, on 127.0.0.1 only: a private ``redis-server`` (nothing on disk), and
the app as a separate ``rag serve`` process using it (real MiniLM, Qdrant local mode, SmolLM2 on
llama.cpp, sample corpus, default deadlines). ``--clients`` clients loop until the deadline, each
request an ``/ask`` or an ``/ask/stream`` at random: ``--miss-clients`` of them ask questions never
asked before (embedding, search and generation), the others a few hot questions (asked once before
the clock starts, so they are cached). Meanwhile, at fixed points of the run, in turn:

- **restart**: the Redis process is killed and started again, empty, ``--down-s`` later;
- **stall**: Redis answers nothing for 2 s (``DEBUG SLEEP 2``);
- **slow**: 5 streams of new questions read by clients that take ~0.5 s per 64 bytes, and 1 s
  after each, a normal client asks the same question by ``/ask``;
- **burst**: 200 distinct new questions at once by ``/ask``.

It reports requests by endpoint and status, 5xx other than the documented 503 (shed load), streams
cut without an ``error`` event, texts that differ from the answer they should equal, seconds until
hits resume after Redis returns, and the latency of cached answers (p50/p99) in each fault's
window. A text differs when: a cached answer (``llm: hit``) is not one generated for that question
in the run (a mixed-up key, a half-written entry, a stale replay); two requests of one question
that overlapped in time both waited for a generation and got different texts (a follower that
diverged); a slow reader's text differs from that of the ``/ask`` that followed it. Exit status 1
when any of the three counts is not 0.

Modules, one concern each: ``outcomes`` (what one request and the run recorded), ``servers`` (the
private Redis and the app), ``clients`` (requests and the steady clients), ``faults`` (the four
faults and their schedule), ``drive`` (clients and faults over one run), ``summary`` (the
figures and the verdict) and ``cli`` (options, files, exit status). ``scripts/load.py`` runs it.

Usage: python scripts/load.py [--duration 60] [--clients 50] [--miss-clients 8]
       [--faults restart,stall,slow,burst] [--max-tokens 24] [--json results.json]
"""

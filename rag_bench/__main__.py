"""``python -m rag_bench``: the same as ``python scripts/benchmark.py``."""

from rag_bench.cli import main

raise SystemExit(main())

"""Cost-savings benchmark: what the caches save, net of what they cost, in one run.

The code is the ``rag_bench`` package; ``python scripts/benchmark.py --help`` shows the options.
"""

from rag_bench.cli import main

raise SystemExit(main())

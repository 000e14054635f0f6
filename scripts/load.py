"""The fault run: a bounded load on loopback, with faults in turn, and what clients saw.

The code is the ``faultrun`` package next to this file (its docstring says what the run does and
reports); ``python scripts/load.py --help`` shows the options.

Usage: python scripts/load.py [--duration 60] [--clients 50] [--miss-clients 8]
       [--faults restart,stall,replace-refused,replace-rollback,slow,burst] [--down-s 2]
       [--stall-s 3] [--refuse-s 4] [--max-tokens 24] [--json results.json]
"""

import sys

from faultrun.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Write generated training pairs (the families in ``scripts/pair_families.py``) as JSONL.

The evaluation set's families are held out of this generator; see ``scripts/make_eval_set.py``.

Usage: python scripts/make_pairs.py OUT.jsonl [--n 8000] [--seed 0] [--families a b ...]
"""

from __future__ import annotations

import argparse
import json

from pair_families import FAMILIES, generate  # beside this script: run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES))
    args = parser.parse_args()
    count = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for pair in generate(args.n, seed=args.seed, families=args.families):
            out.write(json.dumps(pair, ensure_ascii=False) + "\n")
            count += 1
    print(f"wrote {count} pairs to {args.out}")


if __name__ == "__main__":
    main()

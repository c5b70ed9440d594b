"""Passkey accuracy per method and needle depth from a store, and the share of the key's digits right in place.

The exact-key accuracy hides a memory that carries part of a key; "digits" (the share of the key's 5 digits
the answer's first number has in their place) shows it. Used for the positive controls' tables
(benchmarks/README.md, "Positive controls").
    python benchmarks/passkey_digits.py results/passkey_controls.sqlite [--length 250]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
from collections import defaultdict


def digits(prediction: str, key: str) -> float:
    """Share of `key`'s digits that the first number of `prediction` has at the same place."""
    found = re.search(r"\d+", prediction or "")
    answer = found.group() if found else ""
    return sum(a == b for a, b in zip(answer, key, strict=False)) / len(key)


def main(argv: list[str] | None = None) -> None:
    """Print, per method and length, the exact keys per depth and the digits right with the needle back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="an lch store with passkey cells")
    parser.add_argument("--length", type=int, help="only this cell length")
    args = parser.parse_args(argv)
    query = ("SELECT c.label, c.length, s.metadata, s.score, s.prediction, s.target FROM samples s "
             "JOIN cells c USING (cell_id) WHERE c.task = 'passkey'")  # fmt: skip
    with contextlib.closing(sqlite3.connect(args.store)) as db:
        rows = db.execute(query).fetchall()
    table = defaultdict(lambda: defaultdict(list))
    for label, length, metadata, score, prediction, target in rows:
        if args.length is None or length == args.length:
            table[(label, length)][json.loads(metadata)["depth"]].append((score, digits(prediction, target)))
    print("method | length | exact per depth | digits, needle before the last segment")
    for (label, length), by_depth in sorted(table.items()):
        exact = " / ".join(f"{int(sum(s for s, _ in v))}/{len(v)}" for _, v in sorted(by_depth.items()))
        back = [d for depth, v in by_depth.items() if depth < 1 for _, d in v]
        print(f"{label} | {length} | {exact} | {sum(back) / max(len(back), 1):.2f}")


if __name__ == "__main__":
    main()

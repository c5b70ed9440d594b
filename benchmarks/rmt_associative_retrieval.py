"""RMT's associative retrieval from scratch (`harness.controls.associative_retrieval`; arXiv 2207.06881, Fig. 5).

Runs, on one data set (seed 0: 10,000 / 1,000 / 2,000 distinct samples of 4 pairs; training batches drawn
afresh unless `--fixed-data`):

* `rmt`: 4 segments of 3 tokens, 3 memory tokens, each `--seeds` value a new initialisation and batch order
  (published: 0.986 / 0.994 / 0.996);
* `no-memory`: the same segments without memory, trained the same way (published: 0.099);
* `one-segment`: all 10 inputs in one segment, no memory (full attention: what the model can learn at all).

    python benchmarks/rmt_associative_retrieval.py                     # 3 seeds + both controls
    python benchmarks/rmt_associative_retrieval.py --runs rmt --seeds 3 4

Each run stops when validation accuracy reaches 0.99 or after `--steps`; rows (test accuracy, the validation
curve, seconds) go to `--out` as JSON lines, and a rerun skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness.controls import associative_retrieval as retrieval

RUNS = {"rmt": (3, 3), "no-memory": (3, 0), "one-segment": (10, 0)}  # name: (segment, memory tokens)


def main() -> None:
    """Train each requested run and seed; append its row to `--out`; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the rmt run")
    parser.add_argument("--control-seeds", nargs="+", type=int, default=[0], help="seeds of the two controls")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fixed-data", action="store_true", help="cycle the 10,000 training samples (the paper's)")
    parser.add_argument("--out", type=Path, default=Path("out/controls/retrieval.jsonl"))
    args = parser.parse_args()

    data = retrieval.splits(0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.open()] if args.out.exists() else []
    for run in args.runs:
        for seed in args.seeds if run == "rmt" else args.control_seeds:
            if any(row["run"] == run and row["seed"] == seed for row in rows):
                continue
            segment, memory_tokens = RUNS[run]
            method = retrieval.rmt(retrieval.model(seed), segment, memory_tokens)
            how = retrieval.Training(steps=args.steps, lr=args.lr, seed=seed, fresh=not args.fixed_data)
            start = time.perf_counter()
            curve = retrieval.train(method, data, how, on_eval=lambda row, r=run, s=seed: print(r, s, row, flush=True))
            row = {"run": run, "seed": seed, "segment": segment, "memory_tokens": memory_tokens, "lr": args.lr,
                   "fresh": how.fresh,
                   "steps": curve[-1]["step"], "test_accuracy": retrieval.accuracy(method, data.test),
                   "seconds": round(time.perf_counter() - start, 1), "curve": curve}  # fmt: skip
            rows.append(row)
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
    print("| run | seed | segments x length, memory | steps | test accuracy | minutes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        shape = f"{-(-10 // row['segment'])} x {row['segment']}, m={row['memory_tokens']}"
        print(f"| {row['run']} | {row['seed']} | {shape} | {row['steps']} | {row['test_accuracy']:.3f} | "
              f"{row['seconds'] / 60:.1f} |")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)  # a 0.35M-parameter model: more threads only add overhead
    main()

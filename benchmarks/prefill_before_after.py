"""Prefill seconds of a method with and without a speed-up, alternating in one process on the same book tokens.

The speed-ups that can be switched off in place: `--change mlp-rows` (the decoder's feed-forward in row blocks
of `methods.backbone.MLP_ROWS`, before: whole chunks) and `--change split-prefix` (a chunk's causal attention
on CPU as its earlier keys plus its own, `methods.attention.SPLIT_ON_CPU`, before: masked query blocks). Each
pair runs `--repeats` times, before then after, with the model FLOPs counted and the run's matmul peak beside
them; run it on an idle machine.
    python benchmarks/prefill_before_after.py --method infllm --lengths 8192,32768 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import torch

import methods.attention
import methods.backbone
from harness.hardware import matmul_peak
from harness.models import load_model
from methods import flops
from methods.base import METHODS
from methods.baselines.infllm import InfLLMConfig

CHANGES = {  # name: (module, constant, its value before)
    "mlp-rows": (methods.backbone, "MLP_ROWS", 1 << 30),
    "split-prefix": (methods.attention, "SPLIT_ON_CPU", False),
}


def timed_prefill(method, ids: torch.Tensor) -> tuple[float, float]:
    """Seconds and model FLOPs of one prefill from a reset state."""
    method.reset()
    with flops.counting(flops.Ledger()) as ledger:
        start = time.perf_counter()
        method.prefill(ids)
        seconds = time.perf_counter() - start
    return seconds, ledger.model_flops


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: method, length, seconds and share of the peak before and after."""
    from decode import book_tokens  # this folder is on the path when the script runs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infllm", help=f"one of {METHODS.names()} (infllm: the small preset)")
    parser.add_argument("--lengths", default="8192")
    parser.add_argument("--change", default="mlp-rows", choices=sorted(CHANGES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    model, tokenizer = load_model("smollm2-135m")
    config = InfLLMConfig.small() if args.method == "infllm" else METHODS.get(args.method).Config()
    method = METHODS.get(args.method)(model, tokenizer, config)
    module, constant, before = CHANGES[args.change]
    after = getattr(module, constant)
    peak = matmul_peak("cpu", torch.float32)["gflops"]
    print(f"peak {peak} GFLOP/s; {args.change}: {constant} {before} before, {after} after")
    print("| method | length | before s | after s | after/before | % of peak before | after |")
    print("|---|---|---|---|---|---|---|")
    for length in (int(n) for n in args.lengths.split(",")):
        ids = book_tokens(tokenizer, length, args.data_dir)
        times = {before: [], after: []}
        for _ in range(args.repeats):
            for value in (before, after):
                setattr(module, constant, value)
                seconds, counted = timed_prefill(method, ids)
                times[value].append(seconds)
        setattr(module, constant, after)
        best = {value: min(found) for value, found in times.items()}
        share = {value: 100 * counted / 1e9 / best[value] / peak for value in best}
        print(f"| {args.method} | {length} | {best[before]:.1f} | {best[after]:.1f} | {best[after] / best[before]:.2f} "
              f"| {share[before]:.0f} | {share[after]:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

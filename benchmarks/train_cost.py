"""Seconds and peak memory of one UIO training document per gradient strategy, at T segments.

Each (strategy, T) runs in a fresh process, so one run's freed memory cannot hide another's peak:
peak memory is the process's resident-set peak during `backward_document`, above its level just
before (CUDA: peak allocated). One warm-up document (T = 2) runs first. The claim to check:
`incremental` and `unbiased` cost O(T) whatever S, `tbptt` O(T*S), `bptt` memory grows with T.

  python benchmarks/train_cost.py --segments 8,16 --window 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

STRATEGIES = ("bptt", "tbptt", "incremental", "unbiased")


def measure(model: str, strategy: str, segments: int, window: int, segment: int, memory_tokens: int) -> dict:
    """One document of `segments` segments under `strategy`, in this process."""
    import torch

    from harness.metering import Costs, peak_memory
    from harness.models import load_model
    from methods.uio.config import UIOConfig, UIOTrainConfig
    from methods.uio.model import UIO

    torch.manual_seed(0)
    loaded = load_model(model)
    method = UIO(*loaded, UIOConfig.small(segment=segment, memory_tokens=memory_tokens))
    method.train_config = UIOTrainConfig(strategy=strategy, window=window)
    ids = torch.randint(0, loaded[1].vocab_size, (segments * segment,), generator=torch.Generator().manual_seed(0))
    method.backward_document(ids[: 2 * segment])  # warm-up
    costs = Costs()
    with peak_memory(method.backbone.device, costs):
        start = time.perf_counter()
        method.backward_document(ids)
        seconds = time.perf_counter() - start
    return {"strategy": strategy, "window": window, "segments": segments, "seconds": round(seconds, 2),
            "peak_mib": round(costs.peak_mem_bytes / 2**20, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Print a CSV row per (T, strategy), each measured in its own process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model alias, hub id or local directory")
    parser.add_argument("--segments", default="8,16", help="comma-separated T")
    parser.add_argument("--window", type=int, default=2, help="S for tbptt / incremental / unbiased")
    parser.add_argument("--segment", type=int, default=512, help="tokens per segment")
    parser.add_argument("--memory-tokens", type=int, default=16, help="memory tokens per segment")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "strategy,T": run one measurement, print JSON
    args = parser.parse_args(argv)
    if args.one:
        strategy, segments = args.one.split(",")
        print(json.dumps(measure(args.model, strategy, int(segments), args.window, args.segment, args.memory_tokens)))
        return
    print("segments,strategy,window,seconds,peak_mib")
    for segments in args.segments.split(","):
        for strategy in args.strategies.split(","):
            command = [sys.executable, __file__, "--one", f"{strategy},{segments}", "--model", args.model,
                       "--window", str(args.window), "--segment", str(args.segment),
                       "--memory-tokens", str(args.memory_tokens)]  # fmt: skip
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{segments},{strategy},{row['window']},{row['seconds']},{row['peak_mib']}", flush=True)


if __name__ == "__main__":
    main()

"""Decode ms/token and prefill seconds of each method vs plain transformers, on the same tokens.

The reference loop is what `generate` does: `model(ids, use_cache=True, logits_to_keep=1)` for the
prompt, then one token at a time with `past_key_values` (SDPA attention, greedy). Each lch method
runs `prefill` then `decode` through its own contract. Everything runs in one process on the same
weights and tokens (a book's text); 2 tokens are decoded before the clock starts. Ratios are
transformers' time over the method's time, so >= 1 means the method is at least as fast.

  python benchmarks/decode.py --lengths 2048,8192,16384
  python benchmarks/decode.py --lengths 16384 --methods streaming --profile reports_out/profile
  python benchmarks/decode.py --lengths 8192,32768 --methods infllm,full --no-transformers
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.models import load_model
from methods.base import METHODS
from methods.baselines.infllm import InfLLMConfig
from methods.uio.config import UIOConfig
from tasks.data import data_dir, read_book

WARMUP_TOKENS = 2


def book_tokens(tokenizer, length: int, root: str | None) -> torch.Tensor:
    """The first `length` tokens of the longest non-test book (enough text for 100K tokens)."""
    root_dir = data_dir(root)
    if root_dir is None:
        raise SystemExit("no data directory: pass --data-dir (a folder holding books/)")
    books = sorted((root_dir / "books").glob("*.txt"), key=lambda p: p.stat().st_size)
    ids = tokenizer(read_book(books[-1]), add_special_tokens=False)["input_ids"]
    if len(ids) < length:
        raise SystemExit(f"{books[-1].name} has {len(ids)} tokens < {length}")
    return torch.tensor(ids[:length])


@torch.no_grad()
def transformers_run(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode ms/token) of transformers' own cached greedy loop."""
    start = time.perf_counter()
    out = model(ids[None], use_cache=True, logits_to_keep=1)
    prefill = time.perf_counter() - start
    cache, token = out.past_key_values, out.logits[0, -1].argmax()
    for step in range(WARMUP_TOKENS + new_tokens):
        if step == WARMUP_TOKENS:
            start = time.perf_counter()
        out = model(token.view(1, 1), past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[0, -1].argmax()
    return prefill, (time.perf_counter() - start) / new_tokens * 1000


def method_run(method, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode ms/token) of an lch method through its contract."""
    method.reset()
    start = time.perf_counter()
    method.prefill(ids)
    prefill = time.perf_counter() - start
    method.decode(WARMUP_TOKENS, stop_ids=[])
    start = time.perf_counter()
    method.decode(new_tokens, stop_ids=[])
    decode = (time.perf_counter() - start) / new_tokens * 1000
    method.reset()
    return prefill, decode


def profile_decode(method, ids: torch.Tensor, out: Path) -> None:
    """Write the per-op table of 8 decode steps after `ids` (torch.profiler, CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    method.reset()
    method.prefill(ids)
    method.decode(WARMUP_TOKENS, stop_ids=[])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        method.decode(8, stop_ids=[])
    out.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30)
    path = out / f"{method.name}_{ids.numel()}.txt"
    path.write_text(table)
    print(f"profile: {path}", file=sys.stderr)


def build_methods(model, tokenizer, names: list[str], infllm: str) -> dict:
    """Each method with its defaults; UIO with the small preset (untrained: cost is the same), InfLLM with `infllm`."""
    infllm_config = InfLLMConfig.small() if infllm == "small" else InfLLMConfig()
    configs = {"uio": UIOConfig.small(), "infllm": infllm_config}
    return {name: METHODS.get(name)(model, tokenizer, configs.get(name, METHODS.get(name).Config())) for name in names}


def main(argv: list[str] | None = None) -> None:
    """Print one row per method and length: prefill s, decode ms/token and their ratios to transformers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model alias, hub id or local directory")
    parser.add_argument("--lengths", default="2048,8192,16384", help="comma-separated prompt lengths in tokens")
    parser.add_argument("--methods", default="full,streaming,uio", help=f"comma-separated, of {METHODS.names()}")
    parser.add_argument("--new-tokens", type=int, default=32, help="decoded tokens timed after the warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the median is printed")
    parser.add_argument("--data-dir", default=None, help="folder holding books/ (default: lch's data dir)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the reference loop (own-scaling runs)")
    parser.add_argument("--profile", type=Path, default=None, help="write decode profiles here instead of timing")
    parser.add_argument(
        "--infllm", choices=["small", "official"], default="small",
        help="InfLLM preset (small: n_local 2048, topk 16, the official 4K-model configs; official: 4096, 16)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model)
    lengths = [int(x) for x in args.lengths.split(",")]
    methods = build_methods(model, tokenizer, args.methods.split(","), args.infllm)
    if args.profile:
        for length in lengths:
            for method in methods.values():
                profile_decode(method, book_tokens(tokenizer, length, args.data_dir), args.profile)
        return
    print("length,method,prefill_s,decode_ms_per_token,prefill_ratio,decode_ratio")
    method_run(methods[next(iter(methods))], book_tokens(tokenizer, 64, args.data_dir), 2)  # lazy init
    for length in lengths:
        ids = book_tokens(tokenizer, length, args.data_dir)
        runs = {}
        if not args.no_transformers:
            runs["transformers"] = lambda ids=ids: transformers_run(model, ids, args.new_tokens)
        runs |= {name: lambda ids=ids, m=m: method_run(m, ids, args.new_tokens) for name, m in methods.items()}
        timings = {name: [] for name in runs}
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]  # alternate to cancel drift in load
            for name in order:
                timings[name].append(runs[name]())
        median = {name: tuple(statistics.median(t[i] for t in done) for i in (0, 1)) for name, done in timings.items()}
        base = median.get("transformers", (float("nan"), float("nan")))
        for name, (prefill, decode) in median.items():
            print(f"{length},{name},{prefill:.2f},{decode:.1f},{base[0] / prefill:.3f},{base[1] / decode:.3f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

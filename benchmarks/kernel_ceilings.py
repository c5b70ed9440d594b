"""What each kernel a prefill runs reaches on this machine, beside the dense-matmul probe that reports divide by.

A method's share of the peak (the report's "Cost at the roofline") can reach at most what its kernels reach:
the decoder's linear layers at its chunk size, SDPA over the keys a chunk sees (causal fill, or a chunk over a
window with a mask), the output layer for the last position. Each is timed alone (best of 5, warm) at the
embedded model's shapes (SmolLM2-135M: hidden 576, 9 query / 3 KV heads of 64, MLP 1536, vocabulary 49,152);
FLOPs are the multiply-adds of the shapes, masked-out pairs included (what the kernel is handed).
    python benchmarks/kernel_ceilings.py --chunks 512,2048
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from harness.hardware import best_seconds, matmul_peak

HIDDEN, INNER, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 576, 1536, 9, 3, 64, 49_152


def kernels(chunk: int, window: int):
    """(name, call, FLOPs) for one chunk of `chunk` tokens."""
    x, h = torch.randn(chunk, HIDDEN), torch.randn(chunk, INNER)
    linears = {"q, o": (HIDDEN, HIDDEN), "k, v": (HIDDEN, KV_HEADS * HEAD_DIM), "gate, up": (HIDDEN, INNER)}
    for name, (n_in, n_out) in linears.items():
        weight = torch.randn(n_out, n_in)
        yield f"linear {name} {n_in}->{n_out}", (lambda w=weight: F.linear(x, w)), 2 * chunk * n_in * n_out
    down = torch.randn(HIDDEN, INNER)
    yield f"linear down {INNER}->{HIDDEN}", (lambda: F.linear(h, down)), 2 * chunk * INNER * HIDDEN
    head = torch.randn(VOCAB, HIDDEN)
    yield "output layer, all positions", (lambda: F.linear(x, head)), 2 * chunk * HIDDEN * VOCAB
    q = torch.randn(1, HEADS, chunk, HEAD_DIM)
    k, v = torch.randn(1, KV_HEADS, chunk, HEAD_DIM), torch.randn(1, KV_HEADS, chunk, HEAD_DIM)
    sdpa = F.scaled_dot_product_attention
    yield "SDPA causal fill", (lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True)), 4 * HEADS * chunk**2 * HEAD_DIM
    keys = window + chunk
    mask = torch.ones(chunk, keys, dtype=torch.bool).tril(window)
    kw, vw = torch.randn(1, KV_HEADS, keys, HEAD_DIM), torch.randn(1, KV_HEADS, keys, HEAD_DIM)
    yield (f"SDPA chunk over a {window}-token window, mask", (lambda: sdpa(q, kw, vw, attn_mask=mask, enable_gqa=True)),
           4 * HEADS * chunk * keys * HEAD_DIM)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Print the probe and a table of each kernel's rate per chunk size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="512,2048", help="tokens per chunk, comma-separated")
    parser.add_argument("--window", type=int, default=2048, help="keys before a chunk (StreamingLLM's, InfLLM's local)")
    args = parser.parse_args(argv)
    peak = matmul_peak("cpu", torch.float32)
    print(f"dense matmul probe: {peak['gflops']} GFLOP/s ({peak['size']}^3, float32, {peak['threads']} threads)")
    print("| chunk | kernel | GFLOP/s | % of the probe |\n|---|---|---|---|")
    for chunk in (int(c) for c in args.chunks.split(",")):
        for name, run, flops in kernels(chunk, args.window):
            gflops = flops / best_seconds(run) / 1e9
            print(f"| {chunk} | {name} | {gflops:.1f} | {100 * gflops / peak['gflops']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

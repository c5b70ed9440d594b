"""Prefill FLOPs of methods vs input length, counted on the `meta` device (no weights, no compute).

`torch.utils.flop_counter` counts the matmuls and attention of a method's own `prefill`, so the
numbers are exact for our implementation, machine-independent, and available for shapes that do
not fit here (a 7B-shaped Llama at 100K tokens). Wall time is measured separately (cost_cpu.yaml).

  python benchmarks/flops.py --shape smollm2-135m --lengths 4096,8192,16384,32768,65536
  python benchmarks/flops.py --lengths 8192,65536 --methods rmt
  python benchmarks/flops.py --shape llama2-7b --lengths 4096,8192,32768,65536,99328 --uio paper --infllm official
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, LlamaConfig

from harness.models import byte_tokenizer, load_model
from methods.base import METHODS
from methods.baselines.infllm import InfLLMConfig
from methods.uio.config import UIOConfig

SHAPES = {
    # Llama-2-7b-chat: 32 layers, hidden 4096, 32 heads (MHA), vocab 32000, 4K positions.
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0),
}  # fmt: skip


def meta_model(shape: str):
    """A model of `shape` on the meta device and a tokenizer (only its eos id is used)."""
    if shape in SHAPES:
        config = LlamaConfig(**SHAPES[shape])
        tokenizer = byte_tokenizer()
    else:
        real, tokenizer = load_model(shape)
        config = real.config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    return model, tokenizer


def prefill_flops(method, length: int) -> int:
    """FLOPs of one `prefill` of `length` tokens from a fresh state."""
    method.reset()
    ids = torch.zeros(length, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        method.prefill(ids)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    """Print a CSV of method, length, prefill FLOPs, and the ratio to the shortest length."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="smollm2-135m", help=f"model alias or one of {', '.join(SHAPES)}")
    parser.add_argument("--lengths", default="4096,8192,16384,32768,65536", help="comma-separated token counts")
    parser.add_argument("--uio", choices=["small", "paper"], default="small", help="UIO preset (small: 512/16)")
    parser.add_argument(
        "--infllm", choices=["small", "official"], default="small",
        help="InfLLM preset (small: n_local 2048, topk 16, the official 4K-model configs; official: 4096, 16)",
    )  # fmt: skip
    parser.add_argument("--methods", default="full,uio,infllm,rmt", help="comma-separated methods to count")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    model, tokenizer = meta_model(args.shape)
    uio = UIOConfig.small() if args.uio == "small" else UIOConfig()
    infllm = InfLLMConfig.small() if args.infllm == "small" else InfLLMConfig()
    rmt = METHODS.get("rmt").Config()  # official LoRA scripts' shape: 512-token segments, 16 memory tokens
    methods = {"full": METHODS.get("full").Config(), "uio": uio, "infllm": infllm, "rmt": rmt}
    writer = csv.writer(sys.stdout)
    writer.writerow(["shape", "method", "length", "prefill_flops", "ratio_to_first"])
    for name in args.methods.split(","):
        if name not in methods:
            raise SystemExit(f"flops.py: unknown method '{name}' (choose from {', '.join(methods)})")
        config = methods[name]
        method = METHODS.get(name)(model, tokenizer, config)
        first = None
        for length in lengths:
            if method.max_context is not None and length > method.max_context:
                writer.writerow([args.shape, name, length, "over_max_context", ""])
                continue
            flops = prefill_flops(method, length)
            first = first or flops
            writer.writerow([args.shape, name, length, flops, f"{flops / first:.2f}"])
            sys.stdout.flush()


if __name__ == "__main__":
    main()

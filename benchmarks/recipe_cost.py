"""What the published recipes cost, planned from lch's FLOP count (`methods.flops.planned`), in FLOPs and GPU-hours.

Each recipe's forward FLOPs come from its model's shape, its token count and the (query, key) pairs its
attention sees; training multiplies them by the passes it makes: a frozen base (LoRA, UIO, the memories'
decoders) needs the forward and the input-gradient pass (x2), a fully trained model also the weight
gradients (x3), and activation checkpointing adds one more forward (+1). GPU-hours at an H100's dense bf16
peak (989 TFLOP/s, SXM) and at `--share` of it (an assumption until lch measures itself on a GPU).
    python benchmarks/recipe_cost.py [--share 0.4]
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from methods.flops import causal_pairs, planned

H100_BF16 = 989e12
LLAMA2_7B = SimpleNamespace(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                            num_key_value_heads=32, vocab_size=32000)  # fmt: skip
# GPT-2 137M: 12 layers of 768, an MLP of two 768 x 3072 matrices: the same weights as a gated MLP of 2048.
GPT2 = SimpleNamespace(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=12, vocab_size=50257)  # fmt: skip
SMOLLM2 = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, vocab_size=49152)  # fmt: skip


def uio_llms() -> tuple[str, float, str]:
    """UIO-LLMs: Llama-2-7B-chat, 10,000 documents (about 47.5M tokens of <= 8K and 49.5M of book text at 99K).

    Per 1,024-token segment: the encoder (31 layers, LoRA r128 on q, v) over segment + 32 memory tokens,
    the transfer head, and the decoder over the segment seeing its own causal keys and every earlier memory.
    """
    segment, memory = 1024, 32
    flops = 0.0
    for documents, length in ((9_500, 5_000), (500, 99_000)):
        segments = length // segment
        encoder = planned(LLAMA2_7B, segment + memory, causal_pairs(segment + memory), logits=0) * 31 / 32
        decoder_pairs = segments * causal_pairs(segment) + segment * memory * segments * (segments - 1) / 2
        decoder = planned(LLAMA2_7B, segments * segment, decoder_pairs)
        flops += documents * 2 * (segments * encoder + decoder)  # frozen base: forward + input gradients
    return (
        "UIO-LLMs (Llama-2-7B-chat, 10,000 steps, 32x)",
        flops,
        (
            "lch train uio --model meta-llama/Llama-2-7b-chat-hf --dtype bfloat16 --device cuda --data DATA "
            "--stages 8192:9500,99328:500 --segment 1024 --memory-tokens 32 --lora-rank 128 --lora-alpha 512"
        ),
    )


def babilong_rmt() -> tuple[str, float, str]:
    """BABILong's RMT curriculum on GPT-2: 1-2-4-6-8-16-32 segments of 512 (+ 16 read and 16 write memory tokens).

    Batch 64; the scripts' 2,000 steps at one segment and 5,000 at each later stage; fully trained, full BPTT.
    """
    stages = {1: 2_000, 2: 5_000, 4: 5_000, 6: 5_000, 8: 5_000, 16: 5_000, 32: 5_000}
    width = 512 + 2 * 16
    flops = sum(steps * 64 * 3 * n * planned(GPT2, width, causal_pairs(width), logits=512)
                for n, steps in stages.items())  # fmt: skip
    # lch's backbone runs Llama, Mistral and Qwen2, not GPT-2: the nearest run is the same curriculum on
    # SmolLM2-135M (a Llama of GPT-2's size), on stories from lch's bAbI simulator.
    return (
        "BABILong RMT curriculum (GPT-2 137M, 1-32 segments)",
        flops,
        (
            "lch make-data babi --task qa1 --length 512,16384 --n 100000 --out babi.jsonl && lch train rmt --model "
            "smollm2-135m --dtype bfloat16 --device cuda --data babi.jsonl --prompt-field prompt --answer-field answer "
            "--loss answer --method-opt trainable=full --segment 512 --memory-tokens 16 --accumulation 64 --lr 1e-5 "
            "--weight-decay 0.01 --stages 512:2000,1024:5000,2048:5000,3072:5000,4096:5000,8192:5000,16384:5000"
        ),
    )


def longlora() -> tuple[str, float, str]:
    """LongLoRA: Llama-2-7B to 32K, 1,000 steps of 64 sequences; S2-Attn in groups of 8,192; checkpointing."""
    length, group = 32_768, 8_192
    pairs = (length // group) * causal_pairs(group)
    flops = 1_000 * 64 * 3 * planned(LLAMA2_7B, length, pairs)  # frozen base + recomputed forward
    return (
        "LongLoRA (Llama-2-7B, 1,000 steps at 32K)",
        flops,
        (
            "lch train longlora --model meta-llama/Llama-2-7b-hf --dtype bfloat16 --device cuda --data DATA "
            "--seq-len 32768 --steps 1000 --accumulation 64 --activation-checkpointing"
        ),
    )


def comparison_sweep() -> tuple[str, float, str]:
    """examples/compare.yaml on a 7B model, full attention's cost for every cell (an upper bound for the others).

    Perplexity: 2 documents at 4K, 1 at 16K and 32K for 9 methods, 1 at 64K and 100K for 6; passkey 3 samples
    at 4K (9 methods), 16K (8) and 32K (6); LongBench and RULER (about 30 prompts of up to 7.5K) left out.
    """
    cells = [(4_096, 2 * 9), (16_384, 9), (32_768, 9), (65_536, 6), (102_400, 6),
             (4_096, 3 * 9), (16_384, 3 * 8), (32_768, 3 * 6)]  # fmt: skip
    flops = sum(count * planned(LLAMA2_7B, n, causal_pairs(n)) for n, count in cells)
    return (
        "the comparison sweep (examples/compare.yaml) on Llama-2-7B",
        flops,
        (
            "lch run examples/compare.yaml --output out/compare-7b.sqlite  # with model: meta-llama/Llama-2-7b-hf, "
            "dtype: bfloat16, device: cuda"
        ),
    )


def main() -> None:
    """Print the table docs/cost.md shows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.4, help="share of the peak assumed reached (default 0.4)")
    args = parser.parse_args()
    print(f"| recipe | FLOPs | H100-hours at peak | at {args.share:.0%} of peak |")
    print("|---|---|---|---|")
    recipes = (uio_llms(), babilong_rmt(), longlora(), comparison_sweep())
    for name, flops, _ in recipes:
        hours = flops / H100_BF16 / 3600
        print(f"| {name} | {flops:.2e} | {hours:,.3g} | {hours / args.share:,.3g} |")
    print()
    for name, _, command in recipes:
        print(f"{name}:\n  {command}")


if __name__ == "__main__":
    main()

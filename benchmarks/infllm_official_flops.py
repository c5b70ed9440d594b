"""Prefill FLOPs of the official InfLLM schedule, counted analytically, to set `flops.py`'s numbers against.

The official torch path (thunlp/InfLLM `context_manager.py`) attends each execution block of
`exc_block_size` queries over a rectangle of local keys, `[start - n_local, stop)`, plus the initial
tokens, the retrieved blocks and the remainder; after the block it moves tokens into the initial
tokens and packs full blocks, as `methods/baselines/infllm.py` plans them. Matmul FLOPs only, as
`torch.utils.flop_counter` counts them: 2 per weight per token, and 4·hidden per layer per
(query, key) pair (QKᵀ and AV). The greedy-search prefill feeds all but the last token.

  python benchmarks/infllm_official_flops.py      # 7B shape, official preset
"""

from __future__ import annotations

import argparse

LLAMA2_7B = dict(hidden=4096, intermediate=11008, layers=32)


def prefill_flops(length, hidden, intermediate, layers, n_local=4096, n_init=128, block=128, topk=16, exc=512):
    """Official-schedule FLOPs of a prefill of `length` tokens on a Llama-shaped model (MHA)."""
    per_token = 2 * (4 * hidden * hidden + 3 * hidden * intermediate) * layers
    per_pair = 4 * hidden * layers
    pairs, start, init, blocks = 0, 0, 0, 0
    body = length - 1
    for first in range(0, body, exc):
        stop = min(first + exc, body)
        queries = stop - first
        local = stop - max(0, first - n_local)
        remainder = max(start, stop - n_local) - start
        pairs += queries * (local + init + min(topk, blocks) * block + remainder)
        take = max(0, min(n_init - init, stop - start - n_local))
        start, init = start + take, init + take
        packed = max(0, (stop - start - n_local) // block)
        start, blocks = start + packed * block, blocks + packed
    return per_token * body + per_pair * pairs


def main(argv: list[str] | None = None) -> None:
    """Print FLOPs per length and the ratios the InfLLM issue asks about."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="8192,16384,32768,65536", help="comma-separated token counts")
    args = parser.parse_args(argv)
    flops = {n: prefill_flops(n, **LLAMA2_7B) for n in (int(x) for x in args.lengths.split(","))}
    for n, value in flops.items():
        print(f"{n}\t{value:.4e}")
    a, *_, b = flops
    print(f"{b}/{a} = {flops[b] / flops[a]:.3f}")


if __name__ == "__main__":
    main()

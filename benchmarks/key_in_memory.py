"""Which memory configurations learn to carry a digit across one segment boundary (`harness.controls.key_in_memory`).

Issue 34, control 3's smallest experiment: on SmolLM2 UIO's memory learned the passkey and RMT's (LoRA on q, v;
then the whole decoder at BABILong's lr 5e-5) did not. Here each configuration trains on the tiny task, from a
tiny random frozen Llama, on one thread, and prints the held-out accuracy every 100 steps per seed (chance 0.10):
    python benchmarks/key_in_memory.py --seeds 1,2
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.controls import key_in_memory
from harness.models import byte_tokenizer
from methods.baselines.rmt import RMT, RMTConfig
from methods.uio.config import UIOConfig
from methods.uio.model import UIO

LORA = {"lora_rank": 8, "lora_alpha": 32}
CONFIGS = {  # name: (method, its config, learning rate, steps)
    "uio-lora": (UIO, UIOConfig(segment=4, memory_tokens=2, **LORA), 1e-2, 400),
    "rmt-lora-qv": (RMT, RMTConfig(segment=4, memory_tokens=2, **LORA), 1e-2, 1000),
    "rmt-lora-qv-3e-3": (RMT, RMTConfig(segment=4, memory_tokens=2, **LORA), 3e-3, 1000),
    "rmt-full": (RMT, RMTConfig(segment=4, memory_tokens=2, trainable="full"), 1e-3, 400),
    "no-memory": (RMT, RMTConfig(segment=4, memory_tokens=0), 1e-2, 200),
}


def main(argv: list[str] | None = None) -> None:
    """One line per configuration and seed: the accuracy curve and the seconds it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2", help="training draws' seeds, comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the trajectories of tests/unit/test_controls.py
    model, tokenizer = key_in_memory.sharp_llama(), byte_tokenizer()
    for name in args.configs.split(","):
        cls, config, lr, steps = CONFIGS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(0)
            method = cls(model, tokenizer, config)
            start = time.perf_counter()
            curve = " ".join(f"{a:.2f}" for a in key_in_memory.train(method, steps, lr, seed=seed, log_every=100))
            print(f"{name} seed {seed} lr {lr}: {curve} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Cramming check of the read paths on the embedded model (`harness.controls.cramming`; arXiv 2502.13063).

For each of `--texts` 64-token windows of the PG19 test books (the `autoencode` task's windows), optimise
the memory of each read path (RMT's read memory; UIO's per-layer memory states; UIO's `<mem>` encoder
inputs) with the base model and untrained adapters frozen, and report the teacher-forced token accuracy
reached, the steps it took, and the model's own accuracy on those tokens without memory. `rmt-written`
optimises RMT's memory one segment earlier (another book's window reads it and writes what the text reads):
the frozen write path once.

    python benchmarks/cramming.py                                  # 3 texts x 4 paths at 8 memory tokens
    python benchmarks/cramming.py --memory-tokens 1 --paths rmt    # one vector

Rows go to `--out` (JSON lines, one per text and path; a rerun skips the rows already there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness.controls import cramming
from harness.models import load_model
from methods.baselines.rmt import RMT, RMTConfig
from methods.uio.config import UIOConfig
from methods.uio.model import UIO
from tasks.autoencode import Autoencode, AutoencodeConfig


def method(name: str, model, tokenizer, length: int, memory_tokens: int):
    """The untrained method whose read path `name` is."""
    if name.startswith("rmt"):
        return RMT(model, tokenizer, RMTConfig(segment=length, memory_tokens=memory_tokens))
    return UIO(model, tokenizer, UIOConfig(segment=length, memory_tokens=memory_tokens))


READS = {  # name: read path of (method, text ids, carrier ids)
    "rmt": lambda method, ids, carrier: cramming.rmt_read(method, ids),
    "rmt-written": cramming.rmt_written_read,
    "uio-states": lambda method, ids, carrier: cramming.uio_states_read(method, ids),
    "uio-inputs": lambda method, ids, carrier: cramming.uio_inputs_read(method, ids),
}


def main() -> None:
    """Cram each text through each read path; append a row per pair to `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--memory-tokens", type=int, default=8)
    parser.add_argument("--paths", nargs="+", choices=sorted(READS), default=list(READS))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--data-dir", default=None, help="with books/ (default LCH_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("out/controls/cramming.jsonl"))
    args = parser.parse_args()

    model, tokenizer = load_model("smollm2-135m")
    windows = Autoencode(AutoencodeConfig(data_dir=args.data_dir), tokenizer).instances(args.length, 2 * args.texts, 0)
    texts, carriers = windows[: args.texts], windows[args.texts :]  # rmt-written: another book's window first
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.open()] if args.out.exists() else []
    done = {(row["text"], row["path"], row["memory_tokens"]) for row in rows}
    for text, carrier in zip(texts, carriers, strict=True):
        ids, carried = torch.tensor(text.input_ids), torch.tensor(carrier.input_ids)
        for name in args.paths:
            if (text.id, name, args.memory_tokens) in done:
                continue
            start = time.perf_counter()
            path = READS[name](method(name, model, tokenizer, args.length, args.memory_tokens), ids, carried)
            crammed = cramming.cram(path, ids, cramming.Schedule(steps=args.steps))
            seconds = round(time.perf_counter() - start, 1)
            row = {"text": text.id, "path": name, "memory_tokens": args.memory_tokens, "tokens": crammed.tokens,
                   "accuracy": crammed.accuracy, "no_memory_accuracy": crammed.no_memory_accuracy,
                   "steps": crammed.steps, "seconds": seconds, "curve": crammed.curve}  # fmt: skip
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"{text.id} {name:10} m={args.memory_tokens}: accuracy {crammed.accuracy:.3f} after {crammed.steps} "
                  f"steps (no memory {crammed.no_memory_accuracy:.3f}), {seconds} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

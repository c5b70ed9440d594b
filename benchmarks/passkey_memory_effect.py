"""How much of a passkey a method's memory carries across segments, in nats, finer than exact match.

Two prompts identical but for the key in the needle (A and B); after each, the answer " A" (the true key of
the first). The method scores both documents; the effect is NLL(" A" | needle B) - NLL(" A" | needle A), the
answer's NLL summed over its tokens. Where the needle lies in an earlier segment than the question, only
memory can make it positive: a method that carries nothing scores 0 exactly (its last segment is the same
text), full attention scores the base model's whole gain from reading the key. Keys come from a stream of
their own (`lch-memory-effect-SEED-I`), apart from evaluation's and the training generators'.

    python benchmarks/passkey_memory_effect.py --method rmt --method-opt checkpoint=out/passkey-answer/rmt-answer
    python benchmarks/passkey_memory_effect.py --method rmt --method-opt segment=64 --method-opt memory_tokens=0
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch

from harness.checkpoints import method_config
from harness.cli_values import options as cli_options  # lch's K=V reader, as `lch eval --method-opt`
from harness.models import load_model
from methods.base import METHODS
from tasks.passkey import ANSWER_PREFIX, PasskeyPrompt
from tasks.tokens import ids


def answer_nll(method, prompt: list[int], answer: list[int]) -> float:
    """The summed NLL of `answer`'s tokens after `prompt`, as the method scores the whole document."""
    method.reset()
    logprobs = method.score(torch.tensor(prompt + answer))
    return float(-logprobs[-len(answer) :].sum())


def main() -> None:
    """Print the memory effect per needle depth, in nats per answer, with its spread over samples."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, help="a registered method (lch list)")
    parser.add_argument("--method-opt", action="append", default=[], metavar="K=V", help="method option, repeatable")
    parser.add_argument("--model", default="smollm2-135m", help="built-in alias, HF id or local dir")
    parser.add_argument("--length", type=int, default=250, help="prompt tokens (default 250)")
    parser.add_argument("--depths", default="0,0.25,0.5,1", help="needle depths (default 0,0.25,0.5,1)")
    parser.add_argument("--samples", type=int, default=12, help="key pairs per depth (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="the keys' seed (default 0)")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    cls = METHODS.get(args.method)
    where = f"method '{args.method}'"
    method = cls(model, tokenizer, method_config(cls, cli_options(args.method_opt, "--method-opt"), where))
    prompts = PasskeyPrompt(tokenizer, [], ids(tokenizer, " " + ANSWER_PREFIX), args.length)
    print(f"{args.method} {' '.join(args.method_opt)}: NLL(answer | other key) - NLL(answer | its key), nats")
    for depth in [float(d) for d in args.depths.split(",")]:
        effects, needle = [], 0
        for index in range(args.samples):
            rng = random.Random(f"lch-memory-effect-{args.seed}-{depth}-{index}")
            key, other = rng.sample(range(10000, 100000), 2)
            answer = ids(tokenizer, f" {key}")
            true, needle = prompts(args.length, key, depth)
            swapped, _ = prompts(args.length, other, depth)
            effects.append(answer_nll(method, swapped, answer) - answer_nll(method, true, answer))
        spread = statistics.stdev(effects) if len(effects) > 1 else 0.0
        print(f"depth {depth:.2f} (needle at token {needle}): {statistics.mean(effects):+.3f} ± {spread:.3f}")


if __name__ == "__main__":
    main()

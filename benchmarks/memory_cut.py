"""Does RMT's trained memory carry BABILong's facts? Each sample asked twice: whole, and with the memory cut.

Cut: the same checkpoint with `read_memory: false`, so the prompt's last segment reads the initial memory a first
segment reads instead of the memory written over the segments before it. The same weights decode the same last
segment both ways: a sample whose answer changes changed because of the memory. A prompt of one segment is
the same both ways; the table counts the samples of two or more apart.

    python benchmarks/memory_cut.py --method-opt checkpoint=out/babilong-memories/rmt-lr1e-3 --lengths 0,1024,4096
"""

from __future__ import annotations

import argparse

from harness.checkpoints import method_config
from harness.cli_values import options as cli_options  # lch's K=V reader, as `lch eval --method-opt`
from harness.core.validation import validate
from harness.models import load_model
from methods.base import METHODS
from tasks.base import TASKS


def main() -> None:
    """Print, per length and bAbI task, the accuracy whole and cut and how many answers the cut changes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method-opt", action="append", default=[], metavar="K=V", help="RMT option, repeatable")
    parser.add_argument("--model", default="smollm2-135m", help="built-in alias, HF id or local dir")
    parser.add_argument("--lengths", default="0,1024,4096", help="babilong lengths (default 0,1024,4096)")
    parser.add_argument("--samples", type=int, default=10, help="samples a bAbI task (default 10)")
    parser.add_argument("--tasks", default="qa1,qa2,qa3", help="bAbI tasks (default qa1,qa2,qa3)")
    parser.add_argument("--prompt", default="plain", help="babilong prompt (default plain: lch's memories' own)")
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: as the task finds it)")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    cls = METHODS.get("rmt")
    options = cli_options(args.method_opt, "--method-opt")
    method = cls(model, tokenizer, method_config(cls, options, "method 'rmt'"))
    cut = cls(model, tokenizer, method_config(cls, options | {"read_memory": False}, "method 'rmt'"))
    task_cls = TASKS.get("babilong")
    task_options = {"tasks": args.tasks.split(","), "prompt": args.prompt, "data_dir": args.data_dir}
    task = task_cls(validate(task_cls.Config, task_options, "task 'babilong'"), tokenizer)
    print(f"rmt {' '.join(args.method_opt)}: babilong ({args.prompt} prompt), accuracy % whole / memory cut")
    print("| length | task | whole | cut | samples of 2+ segments | answers the cut changes |")
    print("|---|---|---|---|---|---|")
    for length in (int(n) for n in args.lengths.split(",")):
        rows: dict[str, list] = {}
        for instance in task.instances(length, args.samples, seed=0):
            method.reset()
            cut.reset()
            whole = task.evaluate(method, instance)
            cut_score = task.evaluate(cut, instance)
            several = len(instance.input_ids) > method.config.segment
            rows.setdefault(instance.metadata["task"], []).append((whole, cut_score, several))
        for name, found in rows.items():
            n = len(found)
            whole_acc = sum(w.score for w, _, _ in found) / n
            cut_acc = sum(c.score for _, c, _ in found) / n
            changed = sum(w.prediction != c.prediction for w, c, _ in found)
            several = sum(s for _, _, s in found)
            print(f"| {length} | {name} | {whole_acc:.0f} | {cut_acc:.0f} | {several} of {n} | {changed} |", flush=True)


if __name__ == "__main__":
    main()

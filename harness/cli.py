"""`lch`: run long-context methods on tasks and read the results.

lch list                                   methods and tasks
lch eval --method full --task passkey ...  one method x one task (a one-cell-per-length sweep)
lch run examples/quick.yaml                a sweep file
lch results results/lch.sqlite             mean score per method x task x length
lch report results/lch.sqlite --out rep    comparison report: markdown, HTML, figures
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from harness.errors import UserError


def _options(pairs: list[str], what: str) -> dict[str, Any]:
    """`["k=v", ...]` -> dict; values are read as YAML scalars, and `a,b` as a list."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what} '{pair}' must look like key=value")
        try:
            parsed = [yaml.safe_load(v) for v in value.split(",") if v] if "," in value else yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise UserError(f"{what} '{pair}': the value is not a YAML scalar or a,b list ({problem})") from None
        options[key.strip()] = parsed
    return options


def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--lengths must be comma-separated positive integers, got '{text}'") from None
    if not lengths or min(lengths) < 1:
        raise UserError(f"--lengths must be comma-separated positive integers, got '{text}'")
    return lengths


def cmd_list(args: argparse.Namespace) -> None:
    """Print registered methods and tasks with their one-line descriptions."""
    from harness.models import EMBEDDED, TINY
    from methods.base import METHODS
    from tasks.base import TASKS

    print("methods:")
    for name in METHODS.names():
        print(f"  {name:<14} {METHODS.get(name).description}")
    print("tasks:")
    for name in TASKS.names():
        print(f"  {name:<14} {TASKS.get(name).description}")
    print("models:")
    for name, entry in EMBEDDED.items():
        print(f"  {name:<14} {entry.description} (default)")
    for name in TINY:
        print(f"  {name:<14} tiny random Llama for tests")
    print("  (or any Hugging Face id / local directory)")


def _report_outcomes(outcomes, output: str) -> None:
    failed = [o for o in outcomes if o.status != "done"]
    ran = sum(o.ran for o in outcomes)
    print(f"{len(outcomes)} cells, {ran} samples run now, {len(failed)} not done; results in {output}")


def cmd_eval(args: argparse.Namespace) -> None:
    """Run one method on one task at the given lengths."""
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec, validate

    data = {
        "model": args.model, "dtype": args.dtype, "device": args.device, "seed": args.seed,
        "samples": args.samples, "output": args.output, "flops": args.flops,
        "methods": [{"name": args.method, "options": _options(args.method_opt, "--method-opt")}],
        "tasks": [{"name": args.task, "options": _options(args.task_opt, "--task-opt"),
                   "lengths": _lengths(args.lengths) if args.lengths else None}],
    }  # fmt: skip
    spec = validate(SweepSpec, data, "lch eval")
    outcomes = run_sweep(spec, retry_failed=args.retry_failed, progress=not args.quiet, command=_command())
    _report_outcomes(outcomes, spec.output)


def cmd_run(args: argparse.Namespace) -> None:
    """Run a sweep file."""
    from harness.runner import run_sweep
    from harness.sweep import load_sweep

    spec = load_sweep(args.sweep, output=args.output)
    outcomes = run_sweep(spec, retry_failed=args.retry_failed, progress=not args.quiet, command=_command())
    _report_outcomes(outcomes, spec.output)


def cmd_results(args: argparse.Namespace) -> None:
    """Print the per-cell summary of a store."""
    from harness.results import render, summary

    print(render(summary(args.store), args.format))


def cmd_report(args: argparse.Namespace) -> None:
    """Write the method-vs-method report (markdown, self-contained HTML, PNG figures) of a store."""
    from harness.store import open_existing
    from reports.render import write_report
    from reports.tables import load

    open_existing(args.store).close()  # the same one-line check of the store as `lch results`
    # The report's own labels, not the stored ones: it makes them unique (adding the model or the seed).
    labels = sorted(set(load(args.store)["cells"]["label"]))
    if args.baseline is not None and args.baseline not in labels:
        # A baseline that matches nothing would give a report with an empty comparison, silently.
        raise UserError(f"--baseline '{args.baseline}' is not a method label of '{args.store}': {', '.join(labels)}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, or a place that cannot be written
        raise UserError(f"cannot write the report into '{out}': {error.strerror or error}") from None
    written = write_report(args.store, out, baseline=args.baseline or "full", seed=args.seed)
    print(f"report written to {written.html} and {written.markdown} ({len(written.figures)} figures in {out})")


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["lch", *sys.argv[1:]])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are `UserError`s, printed as one line like every other input error."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage block and exiting (the `--help` hint replaces the usage)."""
        raise UserError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    """The argument parser (every flag has help)."""
    top = _Parser(prog="lch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered methods, tasks and built-in models").set_defaults(fn=cmd_list)

    def run_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--retry-failed", action="store_true", help="rerun cells stored as failed/oom/over_length")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="one method on one task at some lengths")
    ev.add_argument("--model", default="smollm2-135m", help="built-in alias, HF id or local dir (default smollm2-135m)")
    ev.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    ev.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ev.add_argument("--method", required=True, help="method name (see lch list)")
    ev.add_argument("--method-opt", action="append", default=[], metavar="K=V", help="method option, repeatable")
    ev.add_argument("--task", required=True, help="task name (see lch list)")
    ev.add_argument("--task-opt", action="append", default=[], metavar="K=V", help="task option, repeatable")
    ev.add_argument("--lengths", help="comma-separated input lengths in tokens, e.g. 1024,4096 (task default if any)")
    ev.add_argument("--samples", type=int, default=5, help="samples per length (default 5)")
    ev.add_argument("--seed", type=int, default=0, help="instance seed (default 0)")
    ev.add_argument("--output", default="results/lch.sqlite", help="SQLite store (default results/lch.sqlite)")
    ev.add_argument("--flops", action="store_true", help="count FLOPs per sample (slower)")
    run_flags(ev)
    ev.set_defaults(fn=cmd_eval)

    rn = sub.add_parser("run", help="run a sweep YAML file")
    rn.add_argument("sweep", help="sweep file, e.g. examples/quick.yaml")
    rn.add_argument("--output", help="SQLite store (overrides the file's 'output')")
    run_flags(rn)
    rn.set_defaults(fn=cmd_run)

    rs = sub.add_parser("results", help="per-cell summary of a store")
    rs.add_argument("store", help="SQLite store written by eval/run")
    rs.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    rs.set_defaults(fn=cmd_results)

    rp = sub.add_parser("report", help="method-vs-method report (accuracy and cost) of a store")
    rp.add_argument("store", help="SQLite store written by eval/run")
    rp.add_argument("--out", required=True, help="output directory for report.md, report.html and the PNG figures")
    rp.add_argument("--baseline", help="method label to compare against (default full; a given one must exist)")
    rp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws (default 0)")
    rp.set_defaults(fn=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors (usage errors included) print one line and exit 2."""
    try:
        args = parser().parse_args(argv)
        args.fn(args)
    except UserError as error:
        # One line even when a message quotes multi-line text (a file's content, a library's error).
        print(f"lch: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lch: interrupted; finished samples are stored, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

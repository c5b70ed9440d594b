"""`lch`: run long-context methods on tasks and read the results.

lch list                                   methods and tasks
lch eval --method full --task passkey ...  one method x one task (a one-cell-per-length sweep)
lch run examples/quick.yaml                a sweep file
lch results results/lch.sqlite             mean score per method x task x length
lch report results/lch.sqlite --out rep    comparison report: markdown, HTML, figures
lch train uio --data DIR --steps N ...     train a method's adapters (checkpoints, --resume)
lch export-tokenizer                       a local HF directory of the model, for lm-eval (tokenizer=DIR)
lch make-data babi --out F.jsonl --n N     generated training records (prompt, answer) as JSONL
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from harness import cli_values as values
from harness.core.errors import UserError


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
    from tasks.generated import GENERATORS

    print("generators (lch make-data):")
    for name in GENERATORS.names():
        print(f"  {name:<14} {GENERATORS.get(name).description}")
    print("models:")
    for name, entry in EMBEDDED.items():
        print(f"  {name:<14} {entry.description} (default)")
    for name in TINY:
        print(f"  {name:<14} tiny random Llama for tests")
    print("  (or any Hugging Face id / local directory)")
    from harness.lm_eval import TASKS_DIR

    print(f"lm-eval: --model lch; lch's tasks as lm-eval YAML: --include_path {TASKS_DIR}")
    if args.hardware:
        _print_peaks()


def _print_peaks() -> None:
    """The dense-matmul peak of each device and dtype a run could use here, as runs measure and store it."""
    import torch

    from harness.hardware import matmul_peak

    print("hardware (dense matmul peak, the 100 % of reports' roofline tables):")
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16):
            peak = matmul_peak(device, dtype)
            print(f"  {device:<8} {peak['dtype']:<9} {peak['gflops']:>9,.1f} GFLOP/s "
                  f"({peak['threads']} threads, {peak['size']}^3)")  # fmt: skip


def _report_outcomes(outcomes, output: str) -> None:
    failed = [o for o in outcomes if o.status != "done"]
    ran = sum(o.ran for o in outcomes)
    print(f"{len(outcomes)} cells, {ran} samples run now, {len(failed)} not done; results in {output}")


def cmd_eval(args: argparse.Namespace) -> None:
    """Run one method on one task at the given lengths."""
    from harness.core.validation import validate
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    data = {
        "model": args.model, "dtype": args.dtype, "device": args.device, "seed": args.seed,
        "samples": args.samples, "output": args.output, "flops": args.flops,
        "methods": [{"name": args.method, "options": values.options(args.method_opt, "--method-opt")}],
        "tasks": [{"name": args.task, "options": values.options(args.task_opt, "--task-opt"),
                   "lengths": values.ints(args.lengths, "--lengths", least=0) if args.lengths else None}],
    }  # fmt: skip
    spec = validate(SweepSpec, data, "lch eval")
    outcomes = run_sweep(
        spec, retry_failed=args.retry_failed, progress=not args.quiet, command=_command(), check_methods=True
    )
    _report_outcomes(outcomes, spec.output)


def cmd_run(args: argparse.Namespace) -> None:
    """Run a sweep file."""
    from harness.runner import run_sweep
    from harness.sweep import load_sweep

    if args.address and args.executor != "ray":
        raise UserError("--address is the Ray cluster to run on: add --executor ray")
    spec = load_sweep(args.sweep, output=args.output)
    outcomes = run_sweep(
        spec, retry_failed=args.retry_failed, progress=not args.quiet, command=_command(), executor=args.executor,
        address=args.address,
    )  # fmt: skip
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


def cmd_train(args: argparse.Namespace) -> None:
    """Train a method's trainable parts; every few steps a resumable checkpoint is written to --out."""
    from harness.core.validation import validate
    from harness.training import TrainSpec, train, trainable_class

    if args.stages and (args.steps or args.seq_len):
        raise UserError("--stages replaces --steps and --seq-len: give one or the other")
    if not args.stages and (args.steps is None or args.seq_len is None):
        raise UserError("lch train needs --steps and --seq-len, or --stages LEN:STEPS,...")
    method_options, train_options = values.extra_options(args.extra, args.method)
    objective = args.objective
    if objective in values.METHOD_OBJECTIVES:  # the method's own loss, chosen in its train config
        if "objective" not in trainable_class(args.method).TrainConfig.model_fields:
            raise UserError(f"--objective {objective} is a method's own objective; {args.method} has none (uio has)")
        train_options["objective"], objective = objective, "lm"
    data = {
        "method": args.method, "model": args.model, "dtype": args.dtype, "device": args.device,
        "data": args.data, "allow_test_data": args.allow_test_data, "steps": args.steps, "seq_len": args.seq_len,
        "text_field": args.text_field, "split": args.split, "prompt_field": args.prompt_field,
        "answer_field": args.answer_field, "loss": args.loss, "objective": objective,
        "stages": values.stages(args.stages) if args.stages else None,
        "accumulation": args.accumulation, "clip": args.clip, "checkpoint_every": args.checkpoint_every,
        "keep_at": values.steps(args.keep_at) if args.keep_at else [],
        "seed": args.seed, "out": args.out,
        "report_to": args.report_to, "logging_dir": args.logging_dir,
        "method_options": method_options | values.options(args.method_opt, "--method-opt"),
        "train_options": train_options | values.options(args.train_opt, "--train-opt"),
    }  # fmt: skip
    given = {"lr": args.lr, "weight_decay": args.weight_decay, "warmup": args.warmup, "schedule": args.schedule,
             "activation_checkpointing": args.activation_checkpointing}  # fmt: skip
    official = getattr(trainable_class(args.method), "TRAINING_DEFAULTS", {})
    data |= official | {key: value for key, value in given.items() if value is not None}
    spec = validate(TrainSpec, data, "lch train")
    if spec.report_to:  # before the model loads: a tracker that cannot write would fail after it
        try:
            Path(spec.tracking_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--logging-dir '{spec.tracking_dir}' cannot be created: {error.strerror}") from None
    from accelerate import PartialState

    log = train(spec, resume=args.resume, progress=not args.quiet)
    if PartialState().is_main_process:  # under `accelerate launch` every process gets here
        print(f"{len(log)} steps, last loss {log[-1]['loss']:.4f}; checkpoint in {spec.out}")


def cmd_gradients(args: argparse.Namespace) -> None:
    """Gradient fidelity of each strategy against the exact one on a few documents (the paper's Table 4)."""
    import torch

    from harness.core.validation import validate
    from harness.fidelity import check_strategies, fidelity, table
    from harness.models import load_model
    from harness.training import check_length, trainable_class
    from harness.training_data import Documents, load_texts
    from tasks.data import data_dir

    cls = trainable_class(args.method)
    method_options, train_options = values.extra_options(args.extra, args.method)
    if train_options:
        raise UserError(f"lch gradients compares strategies itself: drop {', '.join('--' + k for k in train_options)}")
    config = validate(
        cls.Config, method_options | values.options(args.method_opt, "--method-opt"), f"method '{cls.name}'"
    )
    check_length(cls, config, args.seq_len, "--seq-len")
    every = [s for s in cls.TrainConfig.model_fields["strategy"].annotation.__args__ if s != cls.REFERENCE_STRATEGY]
    strategies = args.strategies.split(",") if args.strategies else every
    windows = values.ints(args.window, "--window")
    values.positive(args.documents, "--documents")
    values.positive(args.seeds, "--seeds")
    check_strategies(cls, strategies)
    root = args.data or (str(data_dir() / "books") if data_dir() else None)
    if root is None:
        raise UserError("no data directory found: pass --data (a folder of .txt books)")
    texts = load_texts(root)
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    check_length(cls, config, args.seq_len, "--seq-len", model.config.max_position_embeddings)
    torch.manual_seed(args.seed)  # the adapters' initial weights
    method = cls(model, tokenizer, config)
    documents = Documents(texts, tokenizer, args.seq_len, args.seed)
    chosen = [documents[i].ids for i in range(args.documents)]
    result = table(fidelity(method, chosen, strategies, windows, args.seeds, progress=not args.quiet))
    print(result.to_csv(index=False, float_format="%.4f") if args.csv else result.to_string(index=False))


def cmd_export_tokenizer(args) -> None:
    """Print the directory; with --out, save only the tokenizer there."""
    from harness.models import export_dir

    if args.out:  # checked before the model is exported, which takes a while the first time
        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot write the tokenizer into '{args.out}': {error.strerror or error}") from None
    directory = export_dir(args.model)
    if args.out:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(directory).save_pretrained(args.out)
        directory = Path(args.out)
    print(directory.resolve())


def _tokenizer(model: str):
    """The tokenizer alone of `model`: a built-in alias (exported once), a local directory, or a hub id."""
    from transformers import AutoTokenizer

    from harness.models import export_dir, model_names

    source = export_dir(model) if model in model_names() or Path(model).is_dir() else model
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:  # no such hub id, offline, a folder without a tokenizer
        raise UserError(f"--model '{model}': no tokenizer found ({str(error).strip().splitlines()[0]})") from None


def cmd_make_data(args: argparse.Namespace) -> None:
    """Write `--n` records of a generator to `--out` (JSONL, written atomically)."""
    from harness.core.validation import validate
    from tasks.generated import GENERATORS, write_jsonl

    cls = GENERATORS.get(args.name)
    config = validate(cls.Config, values.generator_options(args.extra, cls), f"generator '{cls.name}'")
    values.positive(args.n, "--n")
    generator = cls(config, _tokenizer(args.model) if cls.needs_tokenizer else None)
    count = write_jsonl(generator.records(args.n, args.seed), args.out)
    print(f"{count} {cls.name} records written to {args.out}")


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["lch", *sys.argv[1:]])


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are `UserError`s, printed as one line like every other input error.

    Abbreviations are off: `--checkpoint DIR` must not become `--checkpoint-every`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage block and exiting (the `--help` hint replaces the usage)."""
        raise UserError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    """The argument parser (every flag has help)."""
    top = _Parser(prog="lch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", help="registered methods, tasks and built-in models")
    listing.add_argument("--hardware", action="store_true", help="also measure this machine's matmul peak (a second)")
    listing.set_defaults(fn=cmd_list)

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
    rn.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: cells one by one in this process (default); ray: cells in parallel on Ray workers "
        "(pip install -e '.[ray]'), each asking for the sweep's gpus_per_cell",
    )  # fmt: skip
    rn.add_argument("--address", help="Ray cluster to join (auto, HOST:PORT); default: a local Ray instance")
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

    tr = sub.add_parser(
        "train",
        help="train a method (e.g. uio); method/train options also as flags: --segment 512 --strategy unbiased",
        description="Options the method defines come as flags too (lch train uio --segment 512 --memory-tokens 16 "
        "--strategy unbiased --window 2); a name in both the method's config and its train config goes to the latter. "
        "Objectives: lm (default: every token's NLL, the method's official loss), answer (--loss answer on records of "
        "--prompt-field and --answer-field, e.g. from lch make-data), distill (--objective distill: KL to the base "
        "model reading the whole document). E.g. lch train rmt --data out/passkey.jsonl --prompt-field prompt "
        "--answer-field answer --loss answer --seq-len 320 --steps 200 --segment 64 --memory-tokens 8 --out out/rmt",
    )
    tr.add_argument("method", help="a trainable method (see lch list)")
    tr.add_argument("--model", default="smollm2-135m", help="built-in alias, HF id or local dir (default smollm2-135m)")
    tr.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (GPU runs autocast to bf16)")
    tr.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    tr.add_argument(
        "--data", required=True,
        help="folder of .txt books, .jsonl/.parquet file(s), a folder saved by datasets' save_to_disk, or a hub "
        "dataset name (PG19 test books are skipped, found by file name and by content)",
    )  # fmt: skip
    tr.add_argument("--text-field", default="text", help="the records' field holding the text (default text)")
    tr.add_argument(
        "--prompt-field", help="records of a prompt and an answer: the prompt's field (with --answer-field); the "
        "document is prompt + answer + EOS, used whole up to the stage's length (longer records are left out)",
    )  # fmt: skip
    tr.add_argument("--answer-field", help="the records' field holding the answer (with --prompt-field)")
    tr.add_argument(
        "--loss", choices=("all", "answer", "long"), default="all",
        help="which predictions count: all tokens (default; each method's official loss), the answer tokens and "
        "EOS of prompt/answer records, or long: the tokens whose base-model log-prob gains > 2 nats from the "
        "context before their segment (LongPPL's key tokens; methods with segments)",
    )  # fmt: skip
    tr.add_argument(
        "--objective", choices=("lm", "distill", *values.METHOD_OBJECTIVES), default="lm",
        help="lm: next-token NLL (default); distill: KL to the base model reading the whole document with full "
        "attention (the teacher, inside its trained window), per counted prediction; autoencode (uio): each "
        "segment decoded back from its own memory (the paper's auto-encoding)",
    )  # fmt: skip
    tr.add_argument("--split", default="train", help="split of a hub dataset or saved DatasetDict (default train)")
    tr.add_argument("--allow-test-data", action="store_true", help="also train on the PG19 test books")
    tr.add_argument("--steps", type=int, help="optimizer steps (or --stages)")
    tr.add_argument("--seq-len", type=int, help="tokens per training document (or --stages)")
    tr.add_argument(
        "--stages",
        help="LEN:STEPS,... train in stages of document lengths, e.g. 4096:60,16384:20 (one optimizer and "
        "schedule over all steps); LEN/LEN/...:STEPS draws each document's length from the set, e.g. "
        "512/1024/1536/2048:100 (BABILong's 1..n segments); replaces --steps and --seq-len",
    )
    tr.add_argument("--accumulation", type=int, default=1, help="documents per optimizer step (default 1)")
    official = "the method's official default (uio: lr 1e-4, weight decay 0.1, warm-up 0.01, cosine; longlora: "
    official += "2e-5, 0, 0.02, constant; rmt: 1e-4, 1e-3, 0.1, linear)"
    tr.add_argument("--lr", type=float, help=f"AdamW peak learning rate ({official})")
    tr.add_argument("--weight-decay", type=float, help="AdamW weight decay (the method's official default)")
    tr.add_argument("--clip", type=float, default=1.0, help="gradient max-norm (default 1.0)")
    tr.add_argument("--warmup", type=float, help="warm-up fraction of the steps (the method's official default)")
    tr.add_argument(
        "--schedule", choices=("cosine", "constant", "linear"), help="after warm-up (the method's official one)"
    )
    tr.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints (default 10)")
    tr.add_argument(
        "--keep-at", metavar="STEP,...",
        help="also keep the checkpoints at these steps (e.g. each stage's end) as OUT@STEP, evaluable as OUT",
    )  # fmt: skip
    tr.add_argument(
        "--activation-checkpointing", action=argparse.BooleanOptionalAction,
        help="keep one layer's activations at a time, recomputed in backward (long documents on small memory; "
        "default: on for longlora, as its official scripts, off otherwise)",
    )  # fmt: skip
    tr.add_argument(
        "--report-to", action="append", default=[], choices=("tensorboard", "wandb", "mlflow"),
        help="also log each step to this tracker (repeatable; through accelerate's tracking API)",
    )  # fmt: skip
    tr.add_argument("--logging-dir", help="where trackers write (default: OUT.logs beside the checkpoint)")
    tr.add_argument("--seed", type=int, default=0, help="data order and sampling seed (default 0)")
    tr.add_argument("--out", required=True, help="checkpoint folder (loadable with --method-opt checkpoint=DIR)")
    tr.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    tr.add_argument("--method-opt", action="append", default=[], metavar="K=V", help="method option, repeatable")
    tr.add_argument("--train-opt", action="append", default=[], metavar="K=V", help="train option, repeatable")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    gr = sub.add_parser(
        "gradients", help="gradient fidelity of a method's training strategies vs the exact one (UIO Table 4)"
    )
    gr.add_argument("--method", default="uio", help="a trainable method (default uio)")
    gr.add_argument("--model", default="smollm2-135m", help="built-in alias, HF id or local dir (default smollm2-135m)")
    gr.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    gr.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    gr.add_argument("--data", help="folder of .txt books (default: the data dir's books/, PG19 test books skipped)")
    gr.add_argument("--documents", type=int, default=2, help="documents to average over (default 2)")
    gr.add_argument("--seq-len", type=int, default=4096, help="tokens per document (default 4096)")
    gr.add_argument(
        "--strategies",
        help="comma-separated strategies (default: all of the method's but its exact one; uio: tbptt,incremental,"
        "unbiased; rmt: truncated); unbiased-official: the official train.py's (no compensation factor)",
    )
    gr.add_argument("--window", default="1,2,4", help="comma-separated windows: uio's S, rmt's k2 (default 1,2,4)")
    gr.add_argument("--seeds", type=int, default=4, help="seeds per stochastic strategy (default 4)")
    gr.add_argument("--seed", type=int, default=0, help="data order and initial adapter weights (default 0)")
    gr.add_argument("--method-opt", action="append", default=[], metavar="K=V", help="method option, repeatable")
    gr.add_argument("--csv", action="store_true", help="CSV instead of a text table")
    gr.add_argument("--quiet", action="store_true", help="no progress bar")
    gr.set_defaults(fn=cmd_gradients)

    ex = sub.add_parser(
        "export-tokenizer",
        help="print a local Hugging Face directory (tokenizer, config, weights) of a model, for lm-eval",
        description="lm-eval's RULER tasks build their data with a tokenizer found by name or path, and "
        "`lm_eval --model hf` loads by path: tokenizer=$(lch export-tokenizer), pretrained=$(lch export-tokenizer).",
    )
    ex.add_argument("--model", default="smollm2-135m", help="built-in alias or local dir (default smollm2-135m)")
    ex.add_argument("--out", help="also save the tokenizer alone into this directory and print it instead")
    ex.set_defaults(fn=cmd_export_tokenizer)

    from tasks.generated import GENERATORS

    def shown(value: Any) -> str:
        """A default as it would be given on the command line; None and [] are 'auto' (documented per generator)."""
        return ",".join(map(str, value)) if isinstance(value, list | tuple) and value else str(value or "auto")

    listed = "\n".join(
        f"  {name:<16} {GENERATORS.get(name).description}\n  {'':<16} options: "
        + ", ".join(
            f"--{field.replace('_', '-')} {shown(info.default)}"
            for field, info in GENERATORS.get(name).Config.model_fields.items()
        )
        for name in GENERATORS.names()
    )
    md = sub.add_parser(
        "make-data", help="generated training records (prompt, answer) as JSONL, e.g. passkey, babi",
        description="generators, with their options as --name value and their defaults (auto: each generator's "
        f"documented choice, tasks/generated/NAME.py):\n{listed}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    md.add_argument("name", help="the generator (listed above)")
    md.add_argument("--out", required=True, help="the JSONL file to write (one record per line)")
    md.add_argument("--n", type=int, required=True, help="number of records")
    md.add_argument("--seed", type=int, default=0, help="the records' seed (default 0)")
    md.add_argument(
        "--model", default="smollm2-135m",
        help="whose tokenizer counts the lengths, for generators that need one (default smollm2-135m)",
    )  # fmt: skip
    md.set_defaults(fn=cmd_make_data)
    return top


@contextlib.contextmanager
def _quiet_loading(quiet: bool):
    """`--quiet` also hides transformers' "Loading weights" bar (a global switch, restored after the command)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors (usage errors included) print one line and exit 2."""
    args = None
    try:
        args, args.extra = parser().parse_known_args(argv)
        if args.extra and args.fn not in (cmd_train, cmd_gradients, cmd_make_data):  # they take options as flags
            parser().parse_args(argv)  # the usual one-line "unrecognized arguments" error
        with _quiet_loading(getattr(args, "quiet", False)):
            args.fn(args)
    except UserError as error:
        # One line even when a message quotes multi-line text (a file's content, a library's error).
        print(f"lch: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        training = args is not None and args.fn is cmd_train
        hint = ("the last checkpoint is kept in --out: rerun with --resume to go on from it" if training else
                "finished samples are stored, rerun the same command to resume")  # fmt: skip
        print(f"lch: interrupted; {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

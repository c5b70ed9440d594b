"""Every bad input to `lch`: exit status 2, one line on stderr, no traceback, and no file it was given changed.

`{d}` in a command or message is the test's copy of the `inputs` folder, which holds a real store
(made by a tiny sweep), files that are not stores, sweep files and data folders.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.store import Store

STORE = "{d}/store.sqlite"
EVAL = ["eval", "--model", "tiny-random-llama", "--output", STORE, "--quiet"]
PASSKEY = ["--method", "full", "--task", "passkey", "--lengths", "300"]
PERPLEXITY = ["--method", "full", "--task", "perplexity", "--lengths", "300"]
LONGBENCH = ["--method", "full", "--task", "longbench"]
NO_STORE = ["text.txt", "random.bin", "empty.bin", "README.md", "other.sqlite"]

SWEEPS = {
    "ok.yaml": "model: tiny-random-llama\noutput: {d}/store.sqlite\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
    "malformed.yaml": "model: tiny-random-llama\nmethods: [{name: full}\ntasks: []\n",
    "list.yaml": "- methods\n- tasks\n",
    "python_tag.yaml": "model: !!python/object/apply:os.system ['true']\n",
    "typo.yaml": "modle: tiny-random-llama\nmethods: [{name: full}]\ntasks: [{name: passkey, lengths: [300]}]\n",
    "labels.yaml": "model: tiny-random-llama\noutput: {d}/store.sqlite\n"
    "methods: [{name: full, label: a}, {name: streaming, label: a}]\ntasks: [{name: passkey, lengths: [300]}]\n",
    "no_methods.yaml": "model: tiny-random-llama\nmethods: []\ntasks: [{name: passkey, lengths: [300]}]\n",
    "no_lengths.yaml": "model: tiny-random-llama\nmethods: [{name: full}]\ntasks: [{name: passkey}]\n",
    "samples.yaml": "model: tiny-random-llama\nsamples: 0\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
    "device.yaml": "model: tiny-random-llama\ndevice: tpu\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
}

# (id, command, what the one line must say)
CASES = [
    # argparse: usage errors are one line too
    ("no-subcommand", [], "the following arguments are required: command"),
    ("unknown-subcommand", ["evl"], "invalid choice: 'evl'"),
    ("eval-without-method", ["eval", "--task", "passkey"], "the following arguments are required: --method"),
    ("samples-not-int", [*EVAL, *PASSKEY, "--samples", "x"], "argument --samples: invalid int value: 'x'"),
    ("seed-not-int", [*EVAL, *PASSKEY, "--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
    ("unknown-flag", [*EVAL, *PASSKEY, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("flag-of-another-subcommand", ["run", "{d}/ok.yaml", "--samples", "3"], "unrecognized arguments: --samples 3"),
    ("results-format", ["results", STORE, "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ("results-without-store", ["results"], "the following arguments are required: store"),
    ("run-without-file", ["run"], "the following arguments are required: sweep"),
    ("report-without-out", ["report", STORE], "the following arguments are required: --out"),
    ("report-seed-not-int", ["report", STORE, "--out", "{d}/rep", "--seed", "x"], "invalid int value: 'x'"),
    # names and options
    ("unknown-method", [*EVAL, "--method", "nope", "--task", "passkey"], "unknown method 'nope'"),
    ("method-typo", [*EVAL, "--method", "ful", "--task", "passkey"], "Did you mean 'full'?"),
    ("unknown-task", [*EVAL, "--method", "full", "--task", "pasky"], "unknown task 'pasky'. Did you mean 'passkey'?"),
    ("unknown-method-option", [*EVAL, *PASSKEY, "--method", "streaming", "--method-opt", "windw=3"],
     "method 'streaming': unknown option 'windw'. Valid: n_sink, window, chunk_size"),
    ("method-option-type", [*EVAL, *PASSKEY, "--method", "streaming", "--method-opt", "window=abc"],
     "method 'streaming': window: Input should be a valid integer"),
    ("streaming-negative-window", [*EVAL, *PASSKEY, "--method", "streaming", "--method-opt", "window=-5"],
     "method 'streaming': invalid options window=-5: need n_sink >= 0, window >= 1, chunk_size >= 1"),
    ("full-rope-factor", [*EVAL, *PASSKEY, "--method-opt", "rope_scaling=linear"],
     "method 'full': invalid options rope_scaling=linear: rope_scaling=linear needs rope_factor > 1"),
    ("option-without-equals", [*EVAL, *PASSKEY, "--method-opt", "chunk"], "--method-opt 'chunk' must look like key="),
    ("option-without-key", [*EVAL, *PASSKEY, "--method-opt", "=5"], "--method-opt '=5' must look like key=value"),
    ("option-bad-yaml", [*EVAL, *PASSKEY, "--method-opt", "chunk_size=[1"], "is not a YAML scalar or a,b list"),
    ("unknown-task-option", [*EVAL, *PASSKEY, "--task-opt", "nope=1"], "task 'passkey': unknown option 'nope'"),
    ("passkey-depths", [*EVAL, *PASSKEY, "--task-opt", "depths=0.5,2"], "depths must be a non-empty list of numbers"),
    ("passkey-chat-template", [*EVAL, *PASSKEY, "--task-opt", "chat_template=maybe"],
     "task 'passkey': chat_template: Input should be 'auto', 'on' or 'off'"),
    ("lengths-not-int", [*EVAL, *PASSKEY, "--lengths", "1x"], "--lengths must be comma-separated positive integers"),
    ("lengths-zero", [*EVAL, *PASSKEY, "--lengths", "0"], "--lengths must be comma-separated positive integers"),
    ("lengths-empty", [*EVAL, *PASSKEY, "--lengths", ","], "--lengths must be comma-separated positive integers"),
    ("lengths-negative", [*EVAL, *PASSKEY, "--lengths=-5"], "--lengths must be comma-separated positive integers"),
    ("samples-zero", [*EVAL, *PASSKEY, "--samples", "0"], "samples: Input should be greater than 0"),
    ("samples-negative", [*EVAL, *PASSKEY, "--samples", "-3"], "samples: Input should be greater than 0"),
    ("dtype", [*EVAL, *PASSKEY, "--dtype", "float64"], "dtype: Input should be 'float32', 'bfloat16' or 'float16'"),
    # device, model and output: all checked before a run is recorded
    ("device-gpu", [*EVAL, *PASSKEY, "--device", "gpu"], "unknown device 'gpu'. Valid: cpu, cuda, cuda:N, auto"),
    ("device-cuda-without-cuda", [*EVAL, *PASSKEY, "--device", "cuda"], "CUDA is not available"),
    ("device-cuda-99", [*EVAL, *PASSKEY, "--device", "cuda:99"], "device 'cuda:99' asked for, but"),
    ("model-unknown-hub-id", [*EVAL, *PASSKEY, "--model", "no/such"], "cannot load model 'no/such'"),
    ("model-missing-dir", [*EVAL, *PASSKEY, "--model", "./nowhere"], "is neither a directory nor a hub id"),
    ("output-unwritable", [*EVAL, *PASSKEY, "--output", "/proc/x.sqlite"],
     "cannot write results store '/proc/x.sqlite': unable to open database file"),
    ("output-directory", [*EVAL, *PASSKEY, "--output", "{d}/folder"], "results store '{d}/folder' is a directory"),
    ("output-text-file", [*EVAL, *PASSKEY, "--output", "{d}/text.txt"], "'{d}/text.txt' is not an lch results store"),
    ("output-foreign-sqlite", [*EVAL, *PASSKEY, "--output", "{d}/other.sqlite"],
     "'{d}/other.sqlite' is not an lch results store (no table runs, cells, samples)"),
    # task data, checked while the sweep is validated
    ("perplexity-missing-data-dir", [*EVAL, *PERPLEXITY, "--task-opt", "data_dir={d}/nowhere"],
     "data_dir '{d}/nowhere' is not a directory"),
    ("perplexity-empty-data-dir", [*EVAL, *PERPLEXITY, "--task-opt", "data_dir={d}/folder"],
     "perplexity: no books (*.txt) in {d}/folder/books"),
    ("perplexity-absent-book", [*EVAL, *PERPLEXITY, "--task-opt", "data_dir={d}/data", "--task-opt", "documents=12345"],
     "perplexity: no book ['12345'] in {d}/data/books. Valid: 99_tale"),
    ("perplexity-sliding-without-window", [*EVAL, *PERPLEXITY, "--task-opt", "protocol=sliding"],
     "task 'perplexity': invalid options protocol=sliding: protocol sliding needs window >= 1"),
    ("longbench-missing-data-dir", [*EVAL, *LONGBENCH, "--task-opt", "data_dir={d}/nowhere"],
     "data_dir '{d}/nowhere' is not a directory"),
    ("longbench-empty-data-dir", [*EVAL, *LONGBENCH, "--task-opt", "data_dir={d}/folder"],
     "LongBench 'narrativeqa': no narrativeqa.jsonl in {d}/folder/longbench or {d}/folder"),
    ("longbench-unknown-dataset", [*EVAL, *LONGBENCH, "--task-opt", "datasets=nosuch"],
     "unknown LongBench dataset 'nosuch'"),
    # sweep files
    ("sweep-absent", ["run", "{d}/absent.yaml"], "sweep file '{d}/absent.yaml' not found"),
    ("sweep-directory", ["run", "{d}/folder"], "sweep file '{d}/folder' is a directory"),
    ("sweep-malformed", ["run", "{d}/malformed.yaml"], "is not valid YAML at line 3, column 1: expected ',' or ']'"),
    ("sweep-python-tag", ["run", "{d}/python_tag.yaml"], "is not valid YAML at line 1, column 8: could not determine"),
    ("sweep-binary", ["run", "{d}/random.bin"], "sweep file '{d}/random.bin' is not UTF-8 text"),
    ("sweep-empty", ["run", "{d}/empty.bin"], "must be a mapping with 'methods' and 'tasks'"),
    ("sweep-list", ["run", "{d}/list.yaml"], "must be a mapping with 'methods' and 'tasks'"),
    ("sweep-unknown-key", ["run", "{d}/typo.yaml"], "unknown option 'modle'"),
    ("sweep-repeated-label", ["run", "{d}/labels.yaml"], "method labels must be unique, got ['a', 'a']"),
    ("sweep-no-methods", ["run", "{d}/no_methods.yaml"], "methods: List should have at least 1 item"),
    ("sweep-no-lengths", ["run", "{d}/no_lengths.yaml"], "task 'passkey' needs lengths"),
    ("sweep-samples-zero", ["run", "{d}/samples.yaml"], "samples: Input should be greater than 0"),
    ("sweep-device", ["run", "{d}/device.yaml"], "unknown device 'tpu'"),
    ("sweep-output-not-a-store", ["run", "{d}/ok.yaml", "--output", "{d}/random.bin"],
     "'{d}/random.bin' is not an lch results store"),
    # stores to read
    ("results-absent", ["results", "{d}/absent.sqlite"], "results store '{d}/absent.sqlite' not found"),
    ("results-directory", ["results", "{d}/folder"], "results store '{d}/folder' is a directory"),
    *[(f"results-{name}", ["results", f"{{d}}/{name}"], f"'{{d}}/{name}' is not an lch results store")
      for name in NO_STORE],
    ("report-absent", ["report", "{d}/absent.sqlite", "--out", "{d}/rep"], "results store '{d}/absent.sqlite' not"),
    *[(f"report-{name}", ["report", f"{{d}}/{name}", "--out", "{d}/rep"], f"'{{d}}/{name}' is not an lch results store")
      for name in NO_STORE],
    ("report-store-without-cells", ["report", "{d}/empty.sqlite", "--out", "{d}/rep"], "has no cells yet"),
    ("report-unknown-baseline", ["report", STORE, "--out", "{d}/rep", "--baseline", "nosuch"],
     "--baseline 'nosuch' is not a method label of '{d}/store.sqlite': full"),
    ("report-out-is-a-file", ["report", STORE, "--out", "{d}/text.txt"], "cannot write the report into '{d}/text.txt'"),
]  # fmt: skip
MARKS = {"device-cuda-without-cuda": pytest.mark.skipif(torch.cuda.is_available(), reason="bad only without CUDA")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The folder every case starts from (copied per case, so a case that writes cannot harm the next)."""
    root = tmp_path_factory.mktemp("inputs")
    made = main(["eval", "--model", "tiny-random-llama", "--method", "full", "--task", "passkey", "--lengths", "256",
                 "--samples", "1", "--output", str(root / "store.sqlite"), "--quiet"])  # fmt: skip
    assert made == 0
    Store(root / "empty.sqlite").close()
    (root / "text.txt").write_text("hello\n")
    (root / "random.bin").write_bytes(random.Random(0).randbytes(4096))
    (root / "empty.bin").write_bytes(b"")
    shutil.copy(Path(__file__).parents[2] / "README.md", root / "README.md")
    with contextlib.closing(sqlite3.connect(root / "other.sqlite")) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()
    (root / "folder").mkdir()
    (root / "data" / "books").mkdir(parents=True)
    (root / "data" / "books" / "99_tale.txt").write_text("Once upon a time there was a long book.\n")
    for name, text in SWEEPS.items():
        (root / name).write_text(text)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    ("command", "message"),
    [pytest.param(command, message, id=name, marks=MARKS.get(name, ())) for name, command, message in CASES],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(command, message, inputs, tmp_path, capsys):
    work = tmp_path / "in"
    shutil.copytree(inputs, work)
    for sweep in work.glob("*.yaml"):  # sweeps name their output inside this case's copy
        sweep.write_text(sweep.read_text().replace("{d}", str(work)))
    before = _files(work)
    capsys.readouterr()
    status = main([part.replace("{d}", str(work)) for part in command])
    out, err = capsys.readouterr()
    assert status == 2, f"exit {status}, stderr {err!r}"
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lch: error: "), f"stderr {err!r}"
    assert message.replace("{d}", str(work)) in lines[0]
    after = _files(work)
    assert {name: after.get(name) for name in before} == before, "a file given to the command changed"
    new = set(after) - set(before)
    if command[:1] == ["report"]:  # reports.tables.load opens the store `?mode=ro`, which leaves -wal/-shm beside it
        new = {name for name in new if not name.endswith(("-wal", "-shm"))}
    assert not new, f"the command made files {sorted(new)}"

"""Every bad input to `lch`: exit status 2, one line on stderr, no traceback, and no file it was given changed.

`{d}` in a command or message is the test's copy of the `inputs` folder, which holds a real store
(made by a tiny sweep), files that are not stores, sweep files and data folders.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
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
TINY_UIO = ["--segment", "16", "--memory-tokens", "4", "--lora-rank", "2", "--lora-alpha", "8"]
TRAIN = ["train", "uio", "--model", "tiny-random-llama", "--data", "{d}/train", "--steps", "1", "--seq-len", "64",
         *TINY_UIO, "--quiet"]  # fmt: skip
GRADIENTS = ["gradients", "--model", "tiny-random-llama", "--data", "{d}/train", "--seq-len", "64", *TINY_UIO[:4]]
UIO_EVAL = [*EVAL, "--method", "uio", "--task", "passkey", "--lengths", "300"]

SWEEPS = {
    "ok.yaml": "model: tiny-random-llama\noutput: {d}/store.sqlite\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
    "malformed.yaml": "model: tiny-random-llama\nmethods: [{name: full}\ntasks: []\n",
    "list.yaml": "- methods\n- tasks\n",
    "python_tag.yaml": "model: !!python/object/apply:os.system ['true']\n",
    "typo.yaml": "modle: tiny-random-llama\nmethods: [{name: full}]\ntasks: [{name: passkey, lengths: [300]}]\n",
    "labels.yaml": "model: tiny-random-llama\noutput: {d}/store.sqlite\n"
    "methods: [{name: full, label: a}, {name: streaming, label: a}]\ntasks: [{name: passkey, lengths: [300]}]\n",
    "control.yaml": "model: tiny-random-llama\noutput: {d}/store.sqlite\nmethods: [{name: full, control: ful}, "
    "{name: streaming}]\ntasks: [{name: passkey, lengths: [300]}]\n",
    "no_methods.yaml": "model: tiny-random-llama\nmethods: []\ntasks: [{name: passkey, lengths: [300]}]\n",
    "no_lengths.yaml": "model: tiny-random-llama\nmethods: [{name: full}]\ntasks: [{name: passkey}]\n",
    "samples.yaml": "model: tiny-random-llama\nsamples: 0\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
    "device.yaml": "model: tiny-random-llama\ndevice: tpu\nmethods: [{name: full}]\n"
    "tasks: [{name: passkey, lengths: [300]}]\n",
    "lm_eval_typo.yaml": "model: tiny-random-llama\nmethods: [{name: full}]\n"
    "tasks: [{name: lm-eval, options: {tasks: [niah_singel_1]}, lengths: [300]}]\n",
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
    ("lengths-not-int", [*EVAL, *PASSKEY, "--lengths", "1x"], "--lengths must be comma-separated non-negative"),
    ("lengths-zero", [*EVAL, *PASSKEY, "--lengths", "0"], "task 'passkey' has no length 0: lengths start at 1"),
    ("lengths-empty", [*EVAL, *PASSKEY, "--lengths", ","], "--lengths must be comma-separated non-negative"),
    ("lengths-negative", [*EVAL, *PASSKEY, "--lengths=-5"], "--lengths must be comma-separated non-negative"),
    ("lengths-empty-item", [*EVAL, *PASSKEY, "--lengths", "1024,,2048"], "--lengths must be comma-separated non-"),
    ("option-without-value", [*EVAL, *PASSKEY, "--method-opt", "chunk_size="], "'chunk_size=' has no value"),
    ("samples-zero", [*EVAL, *PASSKEY, "--samples", "0"], "samples: Input should be greater than 0"),
    ("samples-negative", [*EVAL, *PASSKEY, "--samples", "-3"], "samples: Input should be greater than 0"),
    ("dtype", [*EVAL, *PASSKEY, "--dtype", "float64"], "dtype: Input should be 'float32', 'bfloat16' or 'float16'"),
    # device, model and output: all checked before a run is recorded
    ("device-gpu", [*EVAL, *PASSKEY, "--device", "gpu"], "unknown device 'gpu'. Valid: cpu, cuda, cuda:N, auto"),
    ("device-cuda-without-cuda", [*EVAL, *PASSKEY, "--device", "cuda"], "CUDA is not available"),
    ("device-cuda-99", [*EVAL, *PASSKEY, "--device", "cuda:99"], "device 'cuda:99' asked for, but"),
    ("model-unknown-hub-id", [*EVAL, *PASSKEY, "--model", "no/such"], "cannot load model 'no/such'"),
    ("model-unknown-hub-id-new-store", [*EVAL, *PASSKEY, "--model", "no/such", "--output", "{d}/new.sqlite"],
     "cannot load model 'no/such'"),
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
    # checkpoints given to lch eval: a checkpoint that cannot load is the user's error, before anything is stored
    ("uio-checkpoint-empty-dir", [*UIO_EVAL, "--method-opt", "checkpoint={d}/folder"],
     "UIO checkpoint '{d}/folder' has no encoder_adapter.safetensors"),
    ("uio-checkpoint-corrupt", [*UIO_EVAL, "--method-opt", "checkpoint={d}/ckpt-corrupt"],
     "UIO checkpoint '{d}/ckpt-corrupt' cannot be loaded"),
    ("uio-checkpoint-truncated", [*UIO_EVAL, "--method-opt", "checkpoint={d}/ckpt-truncated"],
     "UIO checkpoint '{d}/ckpt-truncated' cannot be loaded"),
    ("uio-checkpoint-other-method", [*UIO_EVAL, "--method-opt", "checkpoint={d}/ckpt-other"],
     "checkpoint '{d}/ckpt-other' was trained for method 'longlora', not 'uio'"),
    ("uio-checkpoint-contradicted", [*UIO_EVAL, "--method-opt", "checkpoint={d}/ckpt", "--method-opt", "segment=32"],
     "segment=32 contradicts checkpoint '{d}/ckpt', trained with segment=16"),
    ("uio-checkpoint-size-mismatch", [*UIO_EVAL, "--method-opt", "checkpoint={d}/ckpt-bare", "--method-opt",
                                      "segment=16", "--method-opt", "memory_tokens=4"],
     "UIO checkpoint '{d}/ckpt-bare' does not match this model: layers.0.self_attn.q_proj.lora_A.weight is (2, 64), "
     "expected (128, 64)"),
    ("uio-checkpoint-file", [*UIO_EVAL, "--method-opt", "checkpoint={d}/text.txt"], "is a file, not a checkpoint"),
    ("uio-checkpoint-empty", [*UIO_EVAL, "--method-opt", "checkpoint="], "'checkpoint=' has no value"),
    # training and gradients
    ("autoencode-without-memory", [*EVAL, "--method", "full", "--task", "autoencode", "--lengths", "16",
     "--task-opt", "data_dir={d}/data", "--task-opt", "documents=all"],
     "autoencode needs a method with a memory to decode from (reconstruct()); full has none"),
    ("autoencode-length-not-segment", [*EVAL, "--method", "uio", *[f"--method-opt={o}" for o in
     ("segment=16", "memory_tokens=4", "lora_rank=2", "lora_alpha=8")], "--task", "autoencode", "--lengths", "32",
     "--task-opt", "data_dir={d}/data", "--task-opt", "documents=all"],
     "autoencode reconstructs one segment: give length 16 for uio, not 32"),
    ("ray-not-an-address", ["run", "{d}/ok.yaml", "--executor", "ray", "--address", "not an address"],
     "--address 'not an address' must be auto or HOST:PORT"),
    ("ray-nothing-listening", ["run", "{d}/ok.yaml", "--executor", "ray", "--address", "127.0.0.1:9"],
     "no Ray cluster answers at '127.0.0.1:9' (Connection refused"),
    ("abbreviated-flag", [*EVAL, *PASSKEY, "--sampl", "3"], "unrecognized arguments: --sampl 3"),
    ("train-logging-dir-alone", [*TRAIN, "--out", "{d}/fresh", "--logging-dir", "{d}/logs"],
     "--logging-dir is where trackers write: add --report-to"),
    ("train-wandb-missing", [*TRAIN, "--out", "{d}/fresh", "--report-to", "wandb"],
     "--report-to wandb needs its package: pip install wandb"),
    ("train-logging-dir-unwritable", [*TRAIN, "--out", "{d}/fresh", "--report-to", "tensorboard", "--logging-dir",
     "/proc/nope"], "--logging-dir '/proc/nope' cannot be created"),
    ("train-split-on-books", [*TRAIN, "--out", "{d}/fresh", "--split", "test"],
     "--split picks a split of a saved or hub dataset; --data '{d}/train' is files, one split"),
    ("train-text-field-on-books", [*TRAIN, "--out", "{d}/fresh", "--text-field", "body"],
     "--text-field names a field of records; --data '{d}/train' holds .txt books"),
    ("train-resume-nothing", [*TRAIN, "--out", "{d}/fresh", "--resume"], "--resume: no checkpoint in --out"),
    ("train-resume-no-state", [*TRAIN, "--out", "{d}/ckpt-nostate", "--resume"], "has no trainer_state.pt"),
    ("train-resume-truncated-state", [*TRAIN, "--out", "{d}/ckpt-badstate", "--resume"],
     "trainer_state.pt' cannot be read"),
    ("train-binary-data", [*TRAIN, "--data", "{d}/garbage", "--out", "{d}/fresh"],
     "'{d}/garbage/noise.txt' is not text (52% of its bytes are undecodable"),
    ("gradients-documents-zero", [*GRADIENTS, "--documents", "0"], "--documents must be a positive integer, got 0"),
    ("gradients-documents-negative", [*GRADIENTS, "--documents", "-1"], "--documents must be a positive integer"),
    ("gradients-seeds-zero", [*GRADIENTS, "--seeds", "0"], "--seeds must be a positive integer, got 0"),
    ("gradients-window-zero", [*GRADIENTS, "--window", "0"], "--window must be comma-separated positive integers"),
    ("gradients-window-text", [*GRADIENTS, "--window", "abc"], "--window must be comma-separated positive integers"),
    ("export-tokenizer-unwritable", ["export-tokenizer", "--model", "tiny-random-llama", "--out", "/proc/tok"],
     "cannot write the tokenizer into '/proc/tok'"),
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
    ("sweep-unknown-control", ["run", "{d}/control.yaml"],
     "method 'full': control 'ful' is not another method of the sweep. Valid: streaming"),
    ("sweep-no-methods", ["run", "{d}/no_methods.yaml"], "methods: List should have at least 1 item"),
    ("sweep-no-lengths", ["run", "{d}/no_lengths.yaml"], "task 'passkey' needs lengths"),
    ("sweep-samples-zero", ["run", "{d}/samples.yaml"], "samples: Input should be greater than 0"),
    ("sweep-device", ["run", "{d}/device.yaml"], "unknown device 'tpu'"),
    ("sweep-unknown-lm-eval-task", ["run", "{d}/lm_eval_typo.yaml"], "unknown lm-eval task 'niah_singel_1'"),
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
MARKS = {
    "device-cuda-without-cuda": pytest.mark.skipif(torch.cuda.is_available(), reason="bad only without CUDA"),
    "train-wandb-missing": pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb installed"),
}


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
    _checkpoints(root)
    return root


def _checkpoints(root: Path) -> None:
    """A UIO checkpoint trained with non-default options, and broken copies of it."""
    (root / "train").mkdir()
    (root / "train" / "1_story.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    (root / "garbage").mkdir()
    (root / "garbage" / "noise.txt").write_bytes(random.Random(1).randbytes(20_000))
    trained = main([part.replace("{d}", str(root)) for part in [*TRAIN, "--out", "{d}/ckpt"]])
    assert trained == 0
    ckpt = root / "ckpt"
    names = ("corrupt", "truncated", "other", "bare", "nostate", "badstate")
    variants = {name: root / f"ckpt-{name}" for name in names}
    for folder in variants.values():
        shutil.copytree(ckpt, folder)
    adapter = "encoder_adapter.safetensors"
    (variants["corrupt"] / adapter).write_bytes(random.Random(2).randbytes(4096))
    whole = (ckpt / adapter).read_bytes()
    (variants["truncated"] / adapter).write_bytes(whole[: len(whole) // 2])
    spec = json.loads((ckpt / "training.json").read_text())
    (variants["other"] / "training.json").write_text(json.dumps({**spec, "method": "longlora"}))
    (variants["bare"] / "training.json").unlink()
    (variants["nostate"] / "trainer_state.pt").unlink()
    state = (ckpt / "trainer_state.pt").read_bytes()
    (variants["badstate"] / "trainer_state.pt").write_bytes(state[: len(state) // 3])


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
    for spec in work.rglob("training.json"):  # checkpoints name their training data there
        spec.write_text(spec.read_text().replace(str(inputs), str(work)))
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
    assert not new, f"the command made files {sorted(new)}"

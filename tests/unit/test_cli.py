"""The `lch` command line: exit codes, one-line errors, listing, results formats."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

import pytest

from harness.cli import main


def lch(*args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)


def test_unknown_method_is_one_line_exit_2():
    result = lch("eval", "--method", "nope", "--task", "passkey", "--lengths", "100")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert re.search(r"unknown method 'nope'\. Valid: full, .*streaming", result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--method", "full", "--task", "passkey", "--lengths", "1x"], "--lengths"),
        (["eval", "--method", "full", "--method-opt", "chunk", "--task", "passkey", "--lengths", "9"], "key=value"),
        (["eval", "--model", "no/such", "--method", "full", "--task", "passkey", "--lengths", "9"], "cannot load"),
        (["eval", "--model", "./nowhere", "--method", "full", "--task", "passkey", "--lengths", "9"], "neither a dir"),
        (["run", "absent.yaml"], "not found"),
        (["results", "absent.sqlite"], "not found"),
    ],
)  # fmt: skip
def test_user_errors_exit_2(args, message, capsys, tmp_path):
    if args[0] == "eval":
        args = [*args, "--output", str(tmp_path / "e.sqlite"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_list_names_every_method_and_task(capsys):
    from methods.base import METHODS
    from tasks.base import TASKS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names() + TASKS.names() + ["smollm2-135m"]:
        assert f"  {name} " in out


def test_eval_then_results_csv(tmp_path, capsys):
    store = str(tmp_path / "e.sqlite")
    args = ["eval", "--model", "tiny-random-llama", "--method", "streaming", "--method-opt", "window=64",
            "--task", "passkey", "--task-opt", "depths=0.1,0.9", "--lengths", "300,400", "--samples", "2",
            "--output", store, "--quiet"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["results", store, "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["method"], r["task"], r["length"], r["samples"], r["status"]) for r in table] == [
        ("streaming", "passkey", "300", "2", "done"), ("streaming", "passkey", "400", "2", "done"),
    ]  # fmt: skip
    expected = ["method", "task", "length", "samples", "score", "prefill_s", "peak_mem_mb", "state_mb", "status"]
    assert set(expected) <= set(table[0])
    assert all(0.0 <= float(r["score"]) <= 1.0 and float(r["prefill_s"]) > 0 for r in table)


def test_reading_a_store_leaves_nothing_beside_it(tmp_path, capsys):
    """`lch results` and `lch report` on a store left in WAL mode (a killed writer) leave no -wal/-shm files."""
    import sqlite3

    store = tmp_path / "s.sqlite"
    made = main(["eval", "--model", "tiny-random-llama", "--method", "full", "--task", "passkey", "--lengths", "256",
                 "--samples", "1", "--output", str(store), "--quiet"])  # fmt: skip
    assert made == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA journal_mode=WAL")
    assert main(["results", str(store)]) == 0
    assert main(["report", str(store), "--out", str(tmp_path / "rep")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "s.sqlite"]


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_hides_the_weight_loading_bar_and_restores_it(tiny_dir, tmp_path, capsys, quiet):
    from transformers.utils import logging as hf_logging

    args = ["eval", "--model", tiny_dir, "--method", "full", "--task", "passkey", "--lengths", "300",
            "--samples", "1", "--output", str(tmp_path / "q.sqlite")] + ["--quiet"] * quiet  # fmt: skip
    assert main(args) == 0
    assert ("Loading weights" in capsys.readouterr().err) is not quiet
    assert hf_logging.is_progress_bar_enabled()


def test_results_tell_apart_one_label_run_with_two_checkpoints(tmp_path, tiny_llama, capsys):
    from harness.training import TrainSpec, train

    books = tmp_path / "books"
    books.mkdir()
    (books / "1_book.txt").write_text("The river ran past the mill and the mill wheel turned all day long. " * 60)
    options = {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}
    for seed in (0, 1):
        spec = TrainSpec(method="uio", model="tiny-random-llama", data=str(books), steps=1, seq_len=32, seed=seed,
                         out=str(tmp_path / f"ckpt{seed}"), method_options=options)  # fmt: skip
        train(spec, progress=False, loaded=tiny_llama)
    store = str(tmp_path / "r.sqlite")
    for seed in (0, 1):
        assert main(["eval", "--model", "tiny-random-llama", "--method", "uio", "--method-opt",
                     f"checkpoint={tmp_path / f'ckpt{seed}'}", "--task", "passkey", "--lengths", "300", "--samples",
                     "1", "--output", store, "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["results", store, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 and {r["method"] for r in rows} == {"uio"}
    assert sorted(r["checkpoint"].split("@")[0] for r in rows) == [str(tmp_path / "ckpt0"), str(tmp_path / "ckpt1")]

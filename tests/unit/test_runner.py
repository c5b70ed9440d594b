"""The runner: per-sample resume, failure isolation (failed / oom / over_length), SIGKILL recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
import yaml

from harness.runner import run_sweep
from harness.sweep import SweepSpec
from methods.base import METHODS
from methods.baselines.full import Full


def spec(tmp_path, methods, lengths=(300, 400), samples=3, **extra) -> SweepSpec:
    return SweepSpec(
        model="tiny-random-llama", samples=samples, output=str(tmp_path / "r.sqlite"),
        methods=[{"name": m} if isinstance(m, str) else m for m in methods],
        tasks=[{"name": "passkey", "lengths": list(lengths)}], **extra,
    )  # fmt: skip


def rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def broken_methods(monkeypatch):
    """Registers methods that fail in known ways, for this test only."""
    METHODS.names()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))

    @METHODS.register("raises")
    class Raises(Full):
        def prefill(self, input_ids):
            raise RuntimeError("kaboom")

    @METHODS.register("ooms")
    class Ooms(Full):
        def prefill(self, input_ids):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    @METHODS.register("short")
    class Short(Full):
        max_context = 350


def test_every_sample_stored_once_and_rerun_adds_nothing(tmp_path):
    sweep = spec(tmp_path, ["full", {"name": "streaming", "options": {"window": 64}}])
    outcomes = run_sweep(sweep, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 4 and sum(o.ran for o in outcomes) == 12
    db = sweep.output
    assert rows(db, "SELECT count(*), count(DISTINCT cell_id || '/' || idx) FROM samples") == [(12, 12)]
    assert rows(db, "SELECT count(*) FROM runs WHERE finished IS NOT NULL") == [(1,)]
    again = run_sweep(sweep, progress=False)
    assert sum(o.ran for o in again) == 0
    assert rows(db, "SELECT count(*) FROM samples") == [(12,)]
    assert rows(db, "SELECT count(*) FROM runs") == [(1,)]  # a rerun with nothing to do is no run


def test_sample_metadata_says_whether_the_input_is_beyond_the_trained_window(tmp_path):
    sweep = spec(tmp_path, ["full"], lengths=[300, 4200], samples=1)  # the tiny model is trained to 4096 positions
    run_sweep(sweep, progress=False)
    stored = rows(
        sweep.output,
        "SELECT c.length, json_extract(s.metadata, '$.beyond_trained_window') FROM samples s "
        "JOIN cells c USING (cell_id) ORDER BY c.length",
    )
    assert stored == [(300, 0), (4200, 1)]


def test_more_samples_extend_cells_without_redoing(tmp_path):
    run_sweep(spec(tmp_path, ["full"], lengths=[300], samples=2), progress=False)
    first = rows(tmp_path / "r.sqlite", "SELECT idx, prediction, created FROM samples ORDER BY idx")
    outcomes = run_sweep(spec(tmp_path, ["full"], lengths=[300], samples=4), progress=False)
    assert outcomes[0].ran == 2
    after = rows(tmp_path / "r.sqlite", "SELECT idx, prediction, created FROM samples ORDER BY idx")
    assert after[:2] == first and len(after) == 4


def test_sample_row_has_costs_and_metadata(tmp_path):
    sweep = spec(tmp_path, ["full"], lengths=[300], samples=1, flops=True)
    run_sweep(sweep, progress=False)
    ((tokens, prefill, decode, state, flops, metadata, target),) = rows(
        sweep.output, "SELECT input_tokens, prefill_s, decode_s, state_bytes, flops, metadata, target FROM samples"
    )
    assert tokens == 300 and prefill > 0 and decode > 0 and flops > 0
    assert state >= 300 * 2 * 2 * 64 * 4  # at least the prompt's K and V in float32 over 2 layers
    assert '"depth": 0.0' in metadata and len(target) == 5


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, broken_methods):
    sweep = spec(tmp_path, ["raises", "ooms", "short", "full"], lengths=[400], samples=2)
    outcomes = run_sweep(sweep, progress=False)
    assert [(o.cell.label, o.status) for o in outcomes] == [
        ("raises", "failed"), ("ooms", "oom"), ("short", "over_length"), ("full", "done"),
    ]  # fmt: skip
    stored = dict(rows(sweep.output, "SELECT label, status || ': ' || error FROM cells"))
    assert "kaboom" in stored["raises"] and "out of memory" in stored["ooms"] and "350" in stored["short"]
    # failed cells are kept as results; a rerun does not retry them unless asked
    assert sum(o.ran for o in run_sweep(sweep, progress=False)) == 0
    retried = run_sweep(sweep, progress=False, retry_failed=True)
    assert [o.status for o in retried] == ["failed", "oom", "over_length", "done"]


def test_results_show_failed_cells_beside_done_ones(tmp_path, broken_methods):
    from harness.results import summary

    sweep = spec(tmp_path, ["ooms", "full"], lengths=[300], samples=2)
    run_sweep(sweep, progress=False)
    table = summary(sweep.output).set_index("method")
    assert table.loc["ooms", "status"] == "oom" and table.loc["ooms", "samples"] == 0
    assert table.loc["full", "status"] == "done" and table.loc["full", "samples"] == 2
    assert table.loc["full", "score"] == 0.0  # the random tiny model never finds the key


def test_sigkill_halfway_then_rerun_gives_every_sample_once(tmp_path):
    sweep = {
        "model": "tiny-random-llama", "samples": 25, "output": str(tmp_path / "k.sqlite"),
        "methods": [{"name": "full"}], "tasks": [{"name": "passkey", "lengths": [1500, 2500]}],
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    command = [sys.executable, "-m", "harness.cli", "run", str(path), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and process.poll() is None:
        if (tmp_path / "k.sqlite").exists():
            try:
                stored = rows(tmp_path / "k.sqlite", "SELECT count(*) FROM samples")[0][0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 5:
                break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = rows(tmp_path / "k.sqlite", "SELECT count(*) FROM samples")[0][0]
    assert 5 <= partial < 50, "the kill must land halfway through the sweep"
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert rows(tmp_path / "k.sqlite", "SELECT count(*), count(DISTINCT cell_id || '/' || idx) FROM samples") == [
        (50, 50)
    ]
    assert rows(tmp_path / "k.sqlite", "SELECT DISTINCT status FROM cells") == [("done",)]

"""The checkpoints under `checkpoints/` ship as the README states them, and each evaluates by itself.

A fresh clone must be able to evaluate a trained method without training: every folder is small
(at most 10 MB), carries its `training.json` and loss log, appears in the README's table with the
content hash `lch` keys its cells by, the command that made it and the tokens it trained on, and
(slow) scores a PG19 test excerpt better than the same method untrained.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from harness.checkpoints import LOG_FILE, SPEC_FILE, training_budget, with_checkpoint_options
from harness.runner import run_sweep
from harness.sweep import SweepSpec, checkpoint_sha256
from methods.base import METHODS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (ROOT / "checkpoints").iterdir() if p.is_dir())
SHARED_DATA = ROOT.parent / "shared" / "data"
LIMIT_BYTES = 10 * 2**20


def _row(name: str) -> str:
    """The README table's row for checkpoint `name`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(f"| `checkpoints/{name}`")]
    assert len(rows) == 1, f"README.md has {len(rows)} rows for checkpoints/{name} in its shipped-checkpoints table"
    return rows[0]


def test_something_ships():
    assert {p.name for p in SHIPPED} >= {"uio-small", "rmt-small"}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_checkpoint_is_small_complete_and_hashed_as_the_readme_states(folder):
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= LIMIT_BYTES
    assert (folder / SPEC_FILE).is_file() and (folder / LOG_FILE).is_file()
    assert not (folder / "trainer_state.pt").exists()  # optimizer state is for resuming, not for evaluating
    row = _row(folder.name)
    assert f"`{checkpoint_sha256(str(folder))}`" in row
    spec = json.loads((folder / SPEC_FILE).read_text())
    plan = f"--stages {training_budget(str(folder))['stages']}" if spec.get("stages") else f"--steps {spec['steps']}"
    assert re.search(rf"`lch train {spec['method']} [^`]*{plan}[^`]*`", row)  # the command that made it
    budget = training_budget(str(folder))
    assert f"{budget['tokens']:,} tokens" in row and f"up to {budget['longest_document'] // 1024}K" in row


def _perplexities(folder: Path, tmp_path: Path) -> dict[str, float]:
    """Perplexity of the checkpoint and of its method untrained (same options) on 2,048 tokens of a PG19 test book."""
    name = json.loads((folder / SPEC_FILE).read_text())["method"]
    trained = with_checkpoint_options(METHODS.get(name), {"checkpoint": str(folder)}, "test")
    untrained = {key: value for key, value in trained.items() if key != "checkpoint"}
    store = tmp_path / "s.sqlite"
    spec = SweepSpec(
        model="smollm2-135m",
        samples=1,
        output=str(store),
        methods=[
            {"name": name, "label": "trained", "options": trained},
            {"name": name, "label": "untrained", "options": untrained},
        ],
        tasks=[{"name": "perplexity", "options": {"data_dir": str(SHARED_DATA)}, "lengths": [2048]}],
    )
    outcomes = run_sweep(spec, progress=False)
    assert all(outcome.status == "done" for outcome in outcomes), [outcome.error for outcome in outcomes]
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT label, aggregate FROM cells").fetchall()
    return {label: json.loads(aggregate)["perplexity"] for label, aggregate in rows}


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "books").is_dir(), reason=f"no local books in {SHARED_DATA}")
@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_checkpoint_evaluates_by_itself_and_beats_its_untrained_method(folder, tmp_path, smollm):
    del smollm  # loads (and caches) the embedded model once; run_sweep loads it by name
    perplexity = _perplexities(folder, tmp_path)
    assert perplexity["trained"] < perplexity["untrained"]

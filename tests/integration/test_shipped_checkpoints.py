"""The checkpoints under `checkpoints/` ship as docs/training.md states them, and each evaluates by itself.

A fresh clone must be able to evaluate a trained method without training: every folder is small
(at most 10 MB), carries its `training.json` and loss log, appears in docs/training.md's table with the
content hash `lch` keys its cells by, the command that made it and the tokens it trained on, and
(slow) scores better than the same method untrained on what it trained for: a PG19 test excerpt's
perplexity, passkeys only its memory can reach, or BABILong's questions.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import NamedTuple

import pytest

from harness.checkpoints import training_budget, with_checkpoint_options
from harness.core.checkpoint_files import LOG_FILE, SPEC_FILE
from harness.runner import run_sweep
from harness.sweep import SweepSpec, checkpoint_sha256
from methods.base import METHODS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (ROOT / "checkpoints").iterdir() if p.is_dir())
LIMIT_BYTES = 10 * 2**20


def _row(name: str) -> str:
    """docs/training.md's table row for checkpoint `name`."""
    lines = (ROOT / "docs" / "training.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith(f"| `checkpoints/{name}`")]
    assert len(rows) == 1, f"docs/training.md has {len(rows)} rows for checkpoints/{name} in its checkpoint table"
    return rows[0]


def test_something_ships():
    assert {p.name for p in SHIPPED} >= {"uio-small", "rmt-small"}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_checkpoint_is_small_complete_and_hashed_as_the_docs_state(folder):
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= LIMIT_BYTES
    assert (folder / SPEC_FILE).is_file() and (folder / LOG_FILE).is_file()
    assert not (folder / "trainer_state.pt").exists()  # optimizer state is for resuming, not for evaluating
    row = _row(folder.name)
    assert f"`{checkpoint_sha256(str(folder))}`" in row
    spec = json.loads((folder / SPEC_FILE).read_text())
    plan = f"--stages {training_budget(str(folder))['stages']}" if spec.get("stages") else f"--steps {spec['steps']}"
    assert re.search(rf"`lch train {spec['method']} [^`]*{plan}[^`]*`", row)  # the command that made it
    budget = training_budget(str(folder))
    longest = budget["longest_document"]
    size = f"{longest // 1024}K" if longest >= 1024 else f"{longest} tokens"
    assert f"{budget['tokens']:,} tokens" in row and f"up to {size}" in row


# What a checkpoint is judged on: books' perplexity (lower is better) for one trained on books; for one trained
# on passkey records, passkey at 250 tokens with the needle 3 segments of 64 back (depth 0: only memory
# reaches it; higher is better); for one trained on bAbI stories, BABILong qa1-qa3 on the plain prompt it
# trained on, the facts alone (up to 5 segments of 128).
class Judge(NamedTuple):
    task: dict
    metric: str
    better: int  # +1: higher is better
    samples: int
    data: tuple[str, ...] = ()  # the shared data folders the task reads (its data_dir is set to the shared one)


BABI = {"tasks": ["qa1", "qa2", "qa3"], "prompt": "plain"}
JUDGED = {
    "books": Judge({"name": "perplexity", "lengths": [2048]}, "perplexity", -1, 1, ("books",)),
    "passkey": Judge({"name": "passkey", "options": {"depths": [0.0]}, "lengths": [250]}, "accuracy", 1, 6),
    "babilong": Judge({"name": "babilong", "options": BABI, "lengths": [0]}, "accuracy", 1, 10, ("babilong", "books")),
}


def _judged_on(folder: Path) -> str:
    spec = json.loads((folder / SPEC_FILE).read_text())
    if not spec.get("prompt_field"):
        return "books"
    return "babilong" if "babi" in Path(spec["data"]).name else "passkey"


def _scores(folder: Path, tmp_path: Path, shared_data: Path) -> dict[str, float]:
    """The checkpoint's and its untrained method's (same options) score on what it is judged on (`JUDGED`)."""
    name = json.loads((folder / SPEC_FILE).read_text())["method"]
    trained = with_checkpoint_options(METHODS.get(name), {"checkpoint": str(folder)}, "test")
    untrained = {key: value for key, value in trained.items() if key != "checkpoint"}
    task, metric, _, samples, data = JUDGED[_judged_on(folder)]
    if data:
        task = {**task, "options": {**task.get("options", {}), "data_dir": str(shared_data)}}
    store = tmp_path / "s.sqlite"
    spec = SweepSpec(
        model="smollm2-135m",
        samples=samples,
        output=str(store),
        methods=[
            {"name": name, "label": "trained", "options": trained},
            {"name": name, "label": "untrained", "options": untrained},
        ],
        tasks=[task],
    )
    outcomes = run_sweep(spec, progress=False)
    assert all(outcome.status == "done" for outcome in outcomes), [outcome.error for outcome in outcomes]
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT label, aggregate FROM cells").fetchall()
    return {label: json.loads(aggregate)[metric] for label, aggregate in rows}


@pytest.mark.slow
@pytest.mark.parametrize(
    "folder", [pytest.param(p, marks=pytest.mark.data(*JUDGED[_judged_on(p)].data), id=p.name) for p in SHIPPED]
)
def test_a_shipped_checkpoint_evaluates_by_itself_and_beats_its_untrained_method(folder, tmp_path, smollm, shared_data):
    del smollm  # loads (and caches) the embedded model once; run_sweep loads it by name
    scores = _scores(folder, tmp_path, shared_data)
    better = JUDGED[_judged_on(folder)].better
    assert better * scores["trained"] > better * scores["untrained"], scores

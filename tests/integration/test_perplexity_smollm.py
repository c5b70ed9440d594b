from __future__ import annotations

import json
import math
import sqlite3

import pytest

from harness.runner import run_sweep
from harness.sweep import SweepSpec


@pytest.mark.slow
@pytest.mark.data("books")
def test_full_attention_pg19_book_perplexity(tmp_path, smollm, shared_data):
    """Full attention on the first PG19 test book at 1024 tokens: a sane perplexity, 1023 scored tokens."""
    del smollm  # only loads (and caches) the embedded model; run_sweep loads it by name
    store = tmp_path / "pp.sqlite"
    spec = SweepSpec(
        model="smollm2-135m",
        samples=1,
        output=str(store),
        methods=[{"name": "full"}],
        tasks=[{"name": "perplexity", "options": {"data_dir": str(shared_data)}, "lengths": [1024]}],
    )
    (outcome,) = run_sweep(spec, progress=False)
    assert outcome.status == "done", outcome.error
    with sqlite3.connect(store) as db:
        aggregate, task_config = db.execute("SELECT aggregate, task_config FROM cells").fetchone()
        metadata, metrics = db.execute("SELECT metadata, metrics FROM samples").fetchone()
    aggregate = json.loads(aggregate)
    assert json.loads(task_config)["protocol"] == "segment"
    assert aggregate["tokens"] == 1023 and aggregate["documents"] == 1
    assert 5 < aggregate["perplexity"] < 60
    assert aggregate["nll@0"] == pytest.approx(math.log(aggregate["perplexity"]))  # one bucket = the whole document
    assert json.loads(metrics)["tokens"] == 1023
    assert json.loads(metadata)["document"].startswith("10146")
    assert sum(json.loads(metadata)["position_nll"]["tokens"]) == 1023

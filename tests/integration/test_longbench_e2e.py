"""LongBench end to end on the embedded SmolLM2-135M: one trec record through the runner into a store."""

from __future__ import annotations

import json
import sqlite3

import pytest

from harness import runner
from harness.sweep import SweepSpec
from tasks.longbench.build import render_prompt
from tasks.longbench.metrics import score_prediction


@pytest.mark.slow
@pytest.mark.data("longbench")
def test_trec_one_record_through_the_runner(smollm, tmp_path, monkeypatch, shared_data):
    first = (shared_data / "longbench" / "trec.jsonl").read_text(encoding="utf-8").splitlines()[0]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "trec.jsonl").write_text(first + "\n", encoding="utf-8")
    monkeypatch.setattr(runner, "load_model", lambda *args, **kwargs: smollm)  # reuse the session's model
    spec = SweepSpec(
        model="smollm2-135m", samples=1, output=str(tmp_path / "lb.sqlite"), methods=[{"name": "full"}],
        tasks=[{"name": "longbench", "options": {"datasets": ["trec"], "data_dir": str(tmp_path / "data")},
                "lengths": [512]}],
    )  # fmt: skip
    (outcome,) = runner.run_sweep(spec, progress=False)
    assert outcome.status == "done", outcome.error

    with sqlite3.connect(tmp_path / "lb.sqlite") as db:
        aggregate, headline = db.execute("SELECT aggregate, headline FROM cells").fetchone()
        row = db.execute("SELECT score, metrics, metadata, input_tokens, prediction FROM samples").fetchone()
    score, metrics, metadata, tokens, prediction = row
    aggregate, metrics, metadata = json.loads(aggregate), json.loads(metrics), json.loads(metadata)
    _, tokenizer = smollm
    prompt_tokens = len(tokenizer(render_prompt("trec", json.loads(first)), add_special_tokens=False).input_ids)
    assert prompt_tokens > 512 and tokens == 512  # trec: no chat template, middle cut to 256 + 256 tokens
    assert metadata["truncated"] is True and metadata["budget"] == 512 and metadata["prompt_tokens"] == prompt_tokens
    record = json.loads(first)
    assert (
        metrics["trec"] == score == 100 * score_prediction("trec", prediction, record["answers"], record["all_classes"])
    )
    assert headline == "average"
    assert aggregate["average"] == aggregate["trec"] == aggregate["category/few_shot"] == score
    assert (aggregate["truncated"], aggregate["skipped"]) == (1.0, 0.0)

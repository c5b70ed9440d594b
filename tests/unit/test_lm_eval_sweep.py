"""The `lm-eval` sweep task: lm-eval documents as lch samples, with costs, resume and a report."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

pytest.importorskip("lm_eval")

from harness.core.errors import UserError  # noqa: E402
from harness.runner import run_sweep  # noqa: E402
from harness.sweep import SweepSpec  # noqa: E402


def spec(tmp_path, samples, tasks=("niah_single_1",)) -> SweepSpec:
    return SweepSpec(
        model="tiny-random-llama", samples=samples, output=str(tmp_path / "r.sqlite"),
        methods=[{"name": "full"}, {"name": "streaming", "options": {"window": 256, "n_sink": 4}}],
        tasks=[
            {"name": "lm-eval", "lengths": [1024], "options": {"tasks": list(tasks)}},
            {"name": "passkey", "lengths": [300], "samples": 1},
        ],
    )  # fmt: skip


def samples(path):
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return db.execute(
            "SELECT c.label, c.task, s.* FROM samples s JOIN cells c USING (cell_id) ORDER BY c.label, s.idx"
        ).fetchall()


def test_lm_eval_documents_are_samples_with_costs_and_resume(tmp_path):
    run_sweep(spec(tmp_path, samples=1), progress=False)
    run_sweep(spec(tmp_path, samples=2), progress=False)  # extends each cell by one document
    rows = [row for row in samples(tmp_path / "r.sqlite") if row["task"] == "lm-eval"]
    assert [(r["label"], r["instance_id"]) for r in rows] == [
        ("full", "niah_single_1/0"), ("full", "niah_single_1/1"),
        ("streaming", "niah_single_1/0"), ("streaming", "niah_single_1/1"),
    ]  # fmt: skip
    for row in rows:
        metrics = json.loads(row["metrics"])
        assert set(metrics) == {"score", "1024"} and row["score"] == metrics["1024"]
        assert row["prefill_s"] > 0 and row["decode_s"] > 0 and row["decode_tokens"] == 128
        assert 700 <= row["input_tokens"] <= 1024  # RULER leaves room for the answer
        assert json.loads(row["metadata"])["headline_metric"] == "1024"
    # A window of 256 tokens keeps less state than full attention over ~1K tokens.
    assert rows[2]["state_bytes"] < rows[0]["state_bytes"]
    # The same document gets the same prompt under both methods, and a rerun stores nothing new.
    assert rows[0]["input_tokens"] == rows[2]["input_tokens"]
    run_sweep(spec(tmp_path, samples=2), progress=False)
    assert len(samples(tmp_path / "r.sqlite")) == 6


def test_lm_eval_beside_passkey_in_the_report(tmp_path):
    from reports.render import write_report

    run_sweep(spec(tmp_path, samples=1), progress=False)
    out = tmp_path / "report"
    write_report(tmp_path / "r.sqlite", out)
    text = (out / "report.md").read_text()
    assert "**lm-eval:niah_single_1: score (higher is better)" in text and "**passkey: accuracy" in text
    assert "cost_lm-eval_niah_single_1.png" in text  # figure files get safe names
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) for p in out.iterdir())


def test_unknown_lm_eval_task_names_close_ones_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match=r"unknown lm-eval task 'niah_singel_1'. Close names: .*niah_single_1"):
        run_sweep(spec(tmp_path, samples=1, tasks=("niah_singel_1",)), progress=False)
    assert not list(tmp_path.glob("*.sqlite"))  # validation failed: no store


def test_documents_do_not_depend_on_the_global_random_state(tiny_llama):
    """RULER draws needles from the global RNGs; a resumed sweep must see the same documents."""
    import random

    from tasks import lm_eval_task
    from tasks.lm_eval_task import LmEval

    def targets(seed):
        lm_eval_task._load_tasks.cache_clear()
        random.seed(seed)
        task = LmEval(LmEval.Config(tasks=["niah_single_1"]), tiny_llama[1])
        return [i.target for i in task.instances(1024, 3, 0)]

    first = targets(1)
    assert targets(2) == first and len(set(first)) == 3


def test_chat_template_option_prompts_as_lm_eval_does(tmp_path, tiny_chat_dir):
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict

    from harness.lm_eval import TASKS_DIR
    from harness.lm_eval.adapter import LchLM

    prompting = {"apply_chat_template": True, "system_instruction": "Be brief."}
    sweep = SweepSpec(
        model=tiny_chat_dir, samples=2, output=str(tmp_path / "r.sqlite"), methods=[{"name": "full"}],
        tasks=[{"name": "lm-eval", "lengths": [300], "options": {"tasks": ["lch_passkey"], **prompting}}],
    )  # fmt: skip
    run_sweep(sweep, progress=False)
    rows = samples(tmp_path / "r.sqlite")
    lm = LchLM(model=tiny_chat_dir)
    metadata = {"tokenizer": tiny_chat_dir, "max_seq_lengths": [300]}
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    tasks = get_task_dict(["lch_passkey"], manager)
    want = evaluate(lm, tasks, limit=2, log_samples=True, bootstrap_iters=0, **prompting)["samples"]["lch_passkey"]
    prompts = [s["arguments"][0][0] for s in want]
    assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)
    assert [r["input_tokens"] for r in rows] == [len(lm.tok_encode(p)) for p in prompts]
    assert [r["prediction"] for r in rows] == [s["filtered_resps"][0] for s in want]

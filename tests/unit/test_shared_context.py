"""Shared-context questions: one prefill a context, a copy of the state a question; whole prompts without copies."""

from __future__ import annotations

import json
import sqlite3

import pytest

from harness.runner import run_sweep
from harness.sweep import SweepSpec
from methods.base import METHODS
from methods.baselines.full import Full
from tasks.base import TASKS

KEYS = 3
LENGTH = 900  # the tiny tokenizer spends a token a character


def sweep(tmp_path, name, method="full", samples=6, **task) -> SweepSpec:
    return SweepSpec(
        model="tiny-random-llama", samples=samples, output=str(tmp_path / f"{name}.sqlite"),
        methods=[{"name": method}], tasks=[{"name": "passkey", "lengths": [LENGTH], "options": task}],
    )  # fmt: skip


def samples(spec: SweepSpec) -> list[dict]:
    with sqlite3.connect(spec.output) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM samples ORDER BY idx").fetchall()
    return [{**dict(row), "metadata": json.loads(row["metadata"])} for row in rows]


def test_numbered_keys_share_one_context_and_each_question_names_its_key(tiny_llama):
    task = TASKS.get("passkey")(TASKS.get("passkey").Config(keys=KEYS, query_position="after"), tiny_llama[1])
    instances = task.instances(LENGTH, 5, seed=0)
    contexts = [tuple(i.input_ids[: i.context_tokens]) for i in instances]
    assert contexts[0] == contexts[1] == contexts[2] != contexts[3] == contexts[4]
    assert len({i.target for i in instances[:KEYS]}) == KEYS
    for j, instance in enumerate(instances[:KEYS]):
        text = tiny_llama[1].decode(instance.input_ids)
        assert f"The pass key number {j + 1} is {instance.target}." in text
        assert text.endswith(f"What is the pass key number {j + 1}? The pass key number {j + 1} is")
        assert len(instance.input_ids) <= LENGTH
    inside = TASKS.get("passkey")(TASKS.get("passkey").Config(keys=KEYS), tiny_llama[1]).instances(LENGTH, 5, seed=0)
    assert [i.input_ids for i in inside] == [i.input_ids for i in instances]  # the same prompts, one whole
    assert all(i.context_tokens == 0 for i in inside)


def test_questions_after_a_shared_context_answer_as_whole_prompts_do(tmp_path):
    """The same greedy answers either way (full attention: one prefill equals context then question)."""
    inside, after = sweep(tmp_path, "inside", keys=KEYS), sweep(tmp_path, "after", keys=KEYS, query_position="after")
    run_sweep(inside, progress=False)
    run_sweep(after, progress=False)
    whole, shared = samples(inside), samples(after)
    assert [s["prediction"] for s in shared] == [s["prediction"] for s in whole]
    assert all("shared_context" not in s["metadata"] for s in whole)
    details = [s["metadata"]["shared_context"] for s in shared]
    assert [d["questions"] for d in details] == [KEYS] * 6 and all(d["copied"] for d in details)
    for group in (details[:KEYS], details[KEYS:]):  # one context prefill, measured once, amortised over its questions
        assert len({d["context_prefill_s"] for d in group}) == 1
    for sample, detail in zip(shared, details, strict=True):
        amortised = detail["question_prefill_s"] + detail["context_prefill_s"] / KEYS
        assert sample["prefill_s"] == pytest.approx(amortised)


def test_the_context_is_prefilled_once_per_group(tmp_path, monkeypatch):
    prefilled = []
    original = Full.prefill
    monkeypatch.setattr(Full, "prefill", lambda self, ids: prefilled.append(ids.numel()) or original(self, ids))
    run_sweep(sweep(tmp_path, "count", keys=KEYS, query_position="after"), progress=False)
    long_ones = [n for n in prefilled if n > 100]  # the warm-up prefills 32 tokens; questions are ~15
    assert len(long_ones) == 2  # two contexts for six questions


def test_a_method_that_cannot_copy_runs_each_prompt_whole_and_says_so(tmp_path, monkeypatch):
    METHODS.names()
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))

    @METHODS.register("nocopy")
    class NoCopy(Full):
        document_state = ()

    spec = sweep(tmp_path, "nocopy", method="nocopy", keys=KEYS, query_position="after")
    reference = sweep(tmp_path, "whole", keys=KEYS)
    run_sweep(spec, progress=False)
    run_sweep(reference, progress=False)
    rows = samples(spec)
    assert all(s["metadata"]["shared_context"] == {"copied": False} for s in rows)
    assert [s["prediction"] for s in rows] == [s["prediction"] for s in samples(reference)]


def test_old_passkey_cells_keep_their_identity():
    """`keys` and `query_position` at their defaults stay out of the cell id: stores from before them resume."""
    from harness.sweep import expand

    spec = SweepSpec(model="tiny-random-llama", samples=1, output="x.sqlite", methods=[{"name": "full"}],
                     tasks=[{"name": "passkey", "lengths": [LENGTH]}])  # fmt: skip
    identity = expand(spec, check_device=False)[0].identity["task_config"]
    assert "keys" not in identity and "query_position" not in identity


def test_the_report_puts_each_method_s_two_modes_side_by_side(tmp_path):
    from reports.tables import build

    inside, after = sweep(tmp_path, "both", keys=KEYS), sweep(tmp_path, "both", keys=KEYS, query_position="after")
    run_sweep(inside, progress=False)
    run_sweep(after, progress=False)
    tables = build(after.output)
    frame = tables["shared_context"].set_index("mode")
    assert list(frame["task"]) == ["passkey:3 keys"] * 2 and set(frame["method"]) == {"full"}
    stored = [s for s in samples(after) if "shared_context" in s["metadata"]]  # the store holds both cells
    shared, whole = frame.loc["after a shared context"], frame.loc["whole prompt"]
    assert shared["questions"] == KEYS and whole["questions"] == 1
    assert shared["score"] == whole["score"]
    assert shared["prefill_s"] == pytest.approx(sum(s["prefill_s"] for s in stored) / len(stored))
    assert shared["context_s"] + shared["question_s"] == pytest.approx(shared["prefill_s"])


def test_too_short_for_its_keys_is_an_error(tiny_llama):
    task = TASKS.get("passkey")(TASKS.get("passkey").Config(keys=KEYS), tiny_llama[1])
    with pytest.raises(ValueError, match="too short for 3 keys"):
        task.instances(200, 3, seed=0)


def test_longbench_questions_on_one_context_share_its_prefill(tmp_path, monkeypatch):
    """Records with one context (as multifieldqa_zh's repeat) prefill it once; answers equal the whole prompts'."""
    context = "The harbour opened in 1870. The lighthouse is red. The ferry leaves at noon. " * 12
    questions = ("When did the harbour open?", "What colour is the lighthouse?", "When does the ferry leave?")
    rows = [{"input": q, "context": context, "answers": ["x"], "length": 100, "all_classes": None} for q in questions]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qasper.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    prefilled = []
    original = Full.prefill
    monkeypatch.setattr(Full, "prefill", lambda self, ids: prefilled.append(ids.numel()) or original(self, ids))

    def run(name, **options):
        spec = SweepSpec(
            model="tiny-random-llama", samples=3, output=str(tmp_path / f"{name}.sqlite"), methods=[{"name": "full"}],
            tasks=[{"name": "longbench", "lengths": [2000],
                    "options": {"datasets": ["qasper"], "data_dir": str(tmp_path / "data"), **options}}],
        )  # fmt: skip
        run_sweep(spec, progress=False)
        return samples(spec)

    whole = run("inside")
    prefilled.clear()
    shared = run("after", query_position="after")
    assert [s["prediction"] for s in shared] == [s["prediction"] for s in whole]
    assert [s["metadata"]["shared_context"]["questions"] for s in shared] == [3, 3, 3]
    assert len([n for n in prefilled if n > len(context)]) == 1  # the context once; each question alone after it

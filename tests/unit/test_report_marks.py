"""What a newcomer reads off a report: untrained methods and non-official variants named, no method at
chance on a Pareto front, timings taken under load flagged, and a baseline that exists (a store built for
it, passkey rows)."""

from __future__ import annotations

import pytest

from harness.store import Store
from reports import build
from reports.render import write_report
from reports.stats import pareto_front

PROVENANCE = {"git_commit": "abc", "packages": {}, "device": "cpu: test", "load": "1.00 1.00 1.00 on 2 CPUs"}
# label -> (method, accuracy per sample, prefill seconds, peak bytes, untrained, others_cpu_share, variant)
CELLS = {
    "full": ("full", [1, 1, 0, 1], 4.0, 4000, False, 0.0, None),
    "streaming": ("streaming", [0, 0, 0, 0], 1.0, 1000, False, 0.0, None),  # cheapest, finds nothing
    "uio": ("uio", [0, 0, 0, 0], 2.0, 2000, True, 0.0, None),  # no checkpoint
    "infllm": ("infllm", [1, 0, 0, 0], 3.0, 3000, False, 0.6, None),  # timed while other work ran
    "longlora": ("longlora", [1, 1, 0, 1], 5.0, 4000, False, 0.0, "S2-Attn at inference"),
}


@pytest.fixture
def marked_store(tmp_path):
    path = tmp_path / "marks.sqlite"
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    for label, (method, scores, prefill, peak, untrained, others, variant) in CELLS.items():
        store.open_cell(
            label, "run1",
            {"label": label, "model": "tiny", "dtype": "float32", "device": "cpu", "method": method,
             "method_config": {}, "task": "passkey", "task_version": 1, "task_config": {}, "headline": "accuracy",
             "length": 1024, "seed": 0},
        )  # fmt: skip
        for index, score in enumerate(scores):
            store.add_sample(
                label, index,
                {"instance_id": f"p{index}", "score": float(score), "metrics": {"accuracy": float(score)},
                 "metadata": {"depth": 0.5, "untrained": untrained, "others_cpu_share": others, "variant": variant},
                 "input_tokens": 1024, "prefill_s": prefill, "decode_s": 0.1, "decode_tokens": 4,
                 "peak_mem_bytes": peak, "state_bytes": peak},
            )  # fmt: skip
        store.close_cell(label, "done", aggregate={"accuracy": sum(scores) / len(scores)})
    store.close()
    return path


def test_untrained_methods_are_named_in_every_table(marked_store, tmp_path):
    tables = build(marked_store)
    for name in ("summary", "tradeoff", "passkey_depth", "paired"):
        assert "uio (untrained)" in set(tables[name]["method"]), name
    markdown = write_report(marked_store, tmp_path / "out").markdown.read_text()
    assert "| uio |" not in markdown and "uio (untrained)" in markdown


def test_a_non_official_variant_is_named_in_every_table(marked_store, tmp_path):
    tables = build(marked_store)
    for name in ("summary", "tradeoff", "passkey_depth", "paired"):
        assert "longlora (S2-Attn at inference)" in set(tables[name]["method"]), name
    assert "| longlora |" not in write_report(marked_store, tmp_path / "out").markdown.read_text()


def test_no_method_at_chance_is_pareto_optimal(marked_store):
    frame = build(marked_store)["tradeoff"].set_index("method")
    assert frame.loc["streaming", "value"] == 0 and frame.loc["uio (untrained)", "value"] == 0
    # streaming is the cheapest cell, so without the chance rule it would be on both fronts
    assert pareto_front(frame["prefill_s"], frame["value"])[list(frame.index).index("streaming")]
    assert frame.loc[frame["value"] == 0, ["pareto_mem", "pareto_prefill"]].sum().sum() == 0
    assert frame.loc["infllm", "pareto_prefill"] and frame.loc["full", "pareto_prefill"]


def test_timings_under_load_are_flagged_and_the_load_recorded(marked_store, tmp_path):
    markdown = write_report(marked_store, tmp_path / "out").markdown.read_text()
    cost_rows = [line for line in markdown.splitlines() if line.startswith("| passkey |") and "1024" in line]
    flagged = {row.split("|")[2].strip() for row in cost_rows if "1024§" in row}
    assert flagged == {"infllm"}
    assert "timed while other processes used more than a quarter" in markdown
    assert "1.00 1.00 1.00 on 2 CPUs" in markdown


def test_a_missing_baseline_is_not_claimed(marked_store, tmp_path):
    markdown = write_report(marked_store, tmp_path / "out", baseline="nosuch").markdown.read_text()
    assert "baseline none ('nosuch' is not a method of this store)" in markdown
    assert "baseline nosuch" not in markdown

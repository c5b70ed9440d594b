"""Score vs training budget: one run's checkpoints make a curve; methods without a checkpoint are its controls."""

from __future__ import annotations

import pandas as pd

from reports.budget_curve import budget_curve, budget_section
from reports.figures import budget_curves


def checkpoint(steps: int) -> dict:
    return {
        "checkpoint": {
            "path": f"out/run@{steps}",
            "sha256": f"{steps:064d}",
            "budget": {"steps": steps, "tokens": 256 * steps},
        }
    }


def frames(rows):
    cells = pd.DataFrame([{"task": "autoencode", "length": 128, "label": label, "method_config": config}
                          for label, config, _ in rows])  # fmt: skip
    summary = pd.DataFrame([{"task": "autoencode", "length": 128, "method": label, "metric": "bleu4", "value": value}
                            for label, _, value in rows])  # fmt: skip
    return cells, summary


def test_checkpoints_of_one_run_make_a_curve_and_unnumbered_methods_are_its_controls():
    cells, summary = frames([
        ("ae8x-0", {"segment": 128}, 0.0), ("ae8x-300", checkpoint(300), 0.05), ("ae8x-1500", checkpoint(1500), 0.4),
        ("ae32x-300", checkpoint(300), 0.01),  # one budget: no curve, and trained: no control either
        ("streaming-508", {"window": 508}, 0.2), ("full", {}, 0.9),
    ])  # fmt: skip
    frame = budget_curve(cells, summary)
    curve = frame[frame["family"] == "ae8x"].sort_values("steps")
    assert curve["steps"].tolist() == [0, 300, 1500] and curve["value"].tolist() == [0.0, 0.05, 0.4]
    assert curve["tokens"].tolist() == [0, 256 * 300, 256 * 1500]
    assert sorted(frame.loc[frame["family"].isna(), "method"]) == ["full", "streaming-508"]
    assert "ae32x-300" not in set(frame["method"])
    table = next(b for b in budget_section(frame).blocks if b.kind == "table")
    assert table.columns == ["run", "0 steps", "300 steps", "1,500 steps"]
    assert table.rows == [["ae8x", "0.00", "0.05", "0.4"]]
    figure = budget_curves(frame, {})
    (ax,) = figure.axes
    assert len(ax.lines) == 3  # the run's line and a dashed level for each control


def test_no_run_with_two_budgets_no_section():
    cells, summary = frames([("uio@25", checkpoint(25), 30.0), ("streaming-508", {}, 20.0)])
    assert budget_curve(cells, summary).empty

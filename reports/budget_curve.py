"""Score against training budget: checkpoints of one run, taken along the way, as a curve per run.

Cells whose labels differ only by a trailing step count (`ae8x-0`, `ae8x-300`, `ae8x-1500`; `uio-lm@25`,
`uio-lm@100`) are one run's checkpoints: a family. Their x is the steps their checkpoint trained
(`training_budget`, recorded with the cell), 0 without a checkpoint (the untrained start); a family needs
two budgets to make a curve. Other cells of the same task and length with no checkpoint (the controls)
are drawn as flat lines, so a curve shows where the trained method meets them.
"""

from __future__ import annotations

import re

import pandas as pd

from reports.text import Section, fmt

FAMILY = re.compile(r"^(?P<family>.+?)[-@](?P<steps>\d+)$")


def checkpoints_of(method_config: dict) -> list[dict]:
    """The checkpoints in a stored method config: `{"path", "sha256", "budget"}` where a directory was given."""
    return [value for value in method_config.values() if isinstance(value, dict) and "sha256" in value]


def budget_curve(cells: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per task x length x cell: family (None for a flat-line control), steps trained, tokens, headline value."""
    steps, given = {}, {}
    for _, cell in cells.iterrows():
        given[cell["label"]] = cell.get("given_label", cell["label"])  # as the sweep named it: no "(untrained)"
        budgets = [checkpoint.get("budget") or {} for checkpoint in checkpoints_of(cell["method_config"])]
        steps[(cell["task"], int(cell["length"]), cell["label"])] = (
            (budgets[0].get("steps") or 0, budgets[0].get("tokens") or 0) if budgets else (0, 0)
        )
    rows = []
    for _, row in summary[summary["value"].notna()].iterrows():
        key = (row["task"], int(row["length"]), row["method"])
        if key not in steps:
            continue
        match = FAMILY.match(str(given[row["method"]]))
        trained, tokens = steps[key]
        rows.append({"task": row["task"], "length": int(row["length"]), "method": row["method"],
                     "family": match["family"] if match else None, "steps": trained, "tokens": tokens,
                     "metric": row["metric"], "value": row["value"]})  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    budgets = frame.groupby(["task", "length", frame["family"].fillna("")])["steps"].transform("nunique")
    frame.loc[budgets < 2, "family"] = None  # one budget is no curve: `streaming-508` is a control, not a run
    families = frame[frame["family"].notna()]
    if families.empty:
        return pd.DataFrame()
    controls = frame[frame["family"].isna() & (frame["steps"] == 0)]
    shared = controls.set_index(["task", "length"]).index.isin(families.set_index(["task", "length"]).index)
    return pd.concat([families, controls[shared]], ignore_index=True)


def budget_section(frame: pd.DataFrame) -> Section:
    """One table per task and length: each run's headline by steps trained, and the controls beside them."""
    section = Section("Score vs training budget")
    section.text(
        "Checkpoints of one training run (labels that differ only by a trailing step count) by the steps their "
        "weights trained; 0 is the untrained start. Methods without a checkpoint at the same task and length "
        "are the controls the curve should meet or beat."
    )
    for (task, length), group in frame.groupby(["task", "length"], sort=True):
        runs = group[group["family"].notna()]
        grid = runs.pivot_table(index="family", columns="steps", values="value", aggfunc="first").map(fmt)
        grid.columns = [f"{int(c):,} steps" for c in grid.columns]
        grid = grid.fillna("–").reset_index().rename(columns={"family": "run"})
        metric = group["metric"].iloc[0]
        section.table(grid, f"{task} at {length:,} tokens: {metric} by steps trained")
        controls = group[group["family"].isna()]
        if len(controls):
            named = "; ".join(f"{m} {fmt(v)}" for m, v in zip(controls["method"], controls["value"], strict=True))
            section.text(f"Controls at {length:,} tokens ({metric}): {named}.")
    return section

"""Tables of a report, built from a results store with pandas: `build(store_path)` -> dict of DataFrames.

Every table has a `method` column holding the cell label (what the sweep called the method), so a
method run twice with different options shows as two methods. Only tables the store has data for
are returned; `summary`, `cells`, `samples` and the provenance tables are always there.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import UserError
from reports import stats
from reports.budget_curve import budget_curve, checkpoints_of
from reports.cost import cost_samples, scaling
from reports.memory import matched_memory
from reports.memory_gain import token_gain, unpaired
from reports.roofline import roofline
from reports.shared_context import shared_context
from reports.tasks import babilong, effective_lengths, longbench, passkey_depth, perplexity, position_nll, ruler

# A sample is timed under load when other processes used more than this share of the machine's CPU meanwhile.
LOADED = 0.25


def _json(text) -> dict:
    return json.loads(text) if isinstance(text, str) and text else {}


def _task_class(name: str):
    """The registered task behind a report name (`name` or `name:detail`), or None when unknown."""
    from tasks.base import TASKS

    try:
        return TASKS.get(name.partition(":")[0])
    except (UserError, ImportError):  # a task module whose optional dependency is missing must not stop a report
        return None


@functools.cache
def higher_is_better(task: str) -> bool:
    """Return the task's declared direction; unknown task names count as higher-better."""
    cls = _task_class(task)
    return True if cls is None else bool(cls.higher_is_better)


@functools.cache
def chance(task: str) -> float | None:
    """The task's chance level; an unknown higher-is-better task counts 0 (no method at 0 is a trade-off)."""
    cls = _task_class(task)
    if cls is None:
        return 0.0
    return cls.chance if cls.chance is not None or not cls.higher_is_better else 0.0


def _report_name(task: str, config: dict) -> str:
    cls = _task_class(task)
    return task if cls is None else cls.report_name(config)


def load(store_path: str | Path) -> dict[str, pd.DataFrame]:
    """Read `cells`, `samples` (joined with their cell's method/task/length) and `runs`, JSON decoded."""
    path = Path(store_path)
    if not path.is_file():
        raise UserError(f"results store '{path}' not found")
    try:
        # A plain connection, closed when done (sqlite3's own context manager only commits): it only reads,
        # and as the last one out of a WAL store it removes the -wal/-shm files a read-only one would leave.
        with contextlib.closing(sqlite3.connect(path)) as db:
            cells = pd.read_sql_query("SELECT * FROM cells", db)
            samples = pd.read_sql_query("SELECT * FROM samples ORDER BY cell_id, idx", db)
            runs = pd.read_sql_query("SELECT * FROM runs ORDER BY started", db)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as error:
        raise UserError(f"'{path}' is not an lch results store ({str(error).splitlines()[0]})") from None
    if cells.empty:
        raise UserError(f"results store '{path}' has no cells yet (run a sweep into it first)")
    for column in ("method_config", "task_config", "aggregate"):
        cells[column] = cells[column].map(_json)
    cells["task"] = [_report_name(t, c) for t, c in zip(cells["task"], cells["task_config"], strict=True)]
    for column in ("metrics", "metadata"):
        samples[column] = samples[column].map(_json)
    untrained = set(samples.loc[samples["metadata"].map(lambda m: bool(m.get("untrained"))), "cell_id"])
    variants = dict(zip(samples["cell_id"], samples["metadata"].map(lambda m: m.get("variant")), strict=True))
    cells["given_label"] = cells["label"].fillna(cells["method"]).astype(str)  # as the sweep named it
    cells["label"] = _unique_labels(cells, untrained, variants)
    keys = cells[["cell_id", "label", "method", "task", "length", "model", "headline"]]
    samples = samples.merge(keys.rename(columns={"method": "method_name"}), on="cell_id", how="inner")
    samples = samples.rename(columns={"label": "method"})
    samples["skipped"] = samples["metrics"].map(lambda m: float(m.get("skipped", 0.0) or 0.0) >= 1.0)
    # Written by the runner since the beyond_trained_window contract; stores from before it lack the key.
    samples["beyond_window"] = samples["metadata"].map(lambda m: bool(m.get("beyond_trained_window", False)))
    samples["noncausal"] = samples["metadata"].map(lambda m: m.get("causal_score", True) is False)
    samples["beyond_memory"] = samples["metadata"].map(lambda m: bool(m.get("beyond_trained_memory", False)))
    samples["under_load"] = samples["metadata"].map(lambda m: (m.get("others_cpu_share") or 0.0) > LOADED)
    runs["packages"] = runs["packages"].map(_json)
    return {"cells": cells, "samples": samples, "runs": runs}


def _unique_labels(cells: pd.DataFrame, untrained: set[str], variants: dict[str, str | None]) -> pd.Series:
    """The sweep's labels (`given_label`) made unique per (task, length): model (if mixed), then seed or cell id.

    A method that ran without the trained weights it needs (cells in `untrained`), or as a non-official
    variant (`variants`: cell id to the method's `variant`), says so in its label, so every table and
    figure shows it, unless its label already does.
    """
    labels = cells["given_label"].copy()
    unmarked = cells["cell_id"].isin(untrained) & ~labels.str.contains("untrained")
    labels = labels.where(~unmarked, labels + " (untrained)")
    variant = cells["cell_id"].map(variants)
    for index, text in variant.items():
        if isinstance(text, str) and text not in labels[index]:
            labels[index] += f" ({text})"
    if cells["model"].nunique() > 1:
        labels = labels + " [" + cells["model"].astype(str) + "]"
    for _, group in cells.groupby([cells["task"], cells["length"], labels]):
        if len(group) > 1:
            seeds_differ = group["seed"].nunique() == len(group)
            for index, row in group.iterrows():
                labels[index] += f" (seed {row['seed']})" if seeds_differ else f" ({row['cell_id'][:6]})"
    return labels


MIN_INTERVAL_SAMPLES = 3


def _interval(group: pd.DataFrame, point: float, seed: int) -> tuple[float, float]:
    """Bootstrap interval of a cell's headline statistic over its samples.

    Perplexity-style cells (metrics carry `nll_sum` and `tokens`) resample documents and recompute
    `exp(sum nll / sum tokens)`; LongBench-style cells (metadata carries `dataset`) resample within
    datasets and average the dataset means, rescaled when the aggregate is in percent; other cells
    resample the sample scores.
    """
    metrics = group["metrics"]
    if len(group) and all("nll_sum" in m and "tokens" in m for m in metrics):
        nll = [m["nll_sum"] for m in metrics]
        tokens = [m["tokens"] for m in metrics]
        return stats.bootstrap_ratio_ci(nll, tokens, seed=seed, transform=np.exp)
    datasets = group["metadata"].map(lambda m: m.get("dataset"))
    if len(group) and datasets.notna().all():
        low, high = stats.stratified_bootstrap_ci(group["score"], datasets, seed=seed)
        macro = group.groupby(datasets)["score"].mean().mean()
        # LongBench reports dataset means x100 (THUDM/LongBench `LongBench/eval.py::scorer`); samples may be in [0, 1].
        scale = 100.0 if macro and math.isclose(point, 100.0 * macro, rel_tol=1e-3) else 1.0
        return low * scale, high * scale
    return stats.bootstrap_mean_ci(group["score"], seed=seed)


def summary(cells: pd.DataFrame, samples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per cell: headline value, 95% bootstrap interval, sample count, status (and error).

    `beyond_window` is true when any sample of the cell put positions past the base model's trained window,
    `noncausal` when any was scored by a `score()` that looked at later tokens.
    """
    scored = samples[~samples["skipped"] & samples["score"].notna()]
    by_cell = dict(tuple(scored.groupby("cell_id")))
    marks = ["beyond_window", "noncausal", "beyond_memory"]
    flags = samples.groupby("cell_id")[marks].any().to_dict("index")
    rows = []
    for _, cell in cells.iterrows():
        group = by_cell.get(cell["cell_id"], scored.iloc[:0])
        headline = cell["headline"]
        value = cell["aggregate"].get(headline)
        if value is None or not np.isfinite(value):
            value = float(group["score"].mean()) if len(group) else float("nan")
        enough = len(group) >= MIN_INTERVAL_SAMPLES  # resampling 1 or 2 samples draws no interval worth printing
        low, high = _interval(group, value, seed) if enough else (float("nan"), float("nan"))
        rows.append(
            {
                "task": cell["task"], "method": cell["label"], "length": int(cell["length"]),
                "metric": headline, "value": value, "ci_low": low, "ci_high": high, "n": len(group),
                "skipped": int(samples.loc[samples["cell_id"] == cell["cell_id"], "skipped"].sum()),
                "status": cell["status"], "error": cell["error"], "higher_is_better": higher_is_better(cell["task"]),
                **{name: bool(flags.get(cell["cell_id"], {}).get(name, False)) for name in marks},
            }
        )  # fmt: skip
    return pd.DataFrame(rows).sort_values(["task", "method", "length"], ignore_index=True)


def tradeoff(summary_frame: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Per finished cell: headline value against median peak memory and prefill time, Pareto flags per task x length.

    The front is taken within one input length only: a 512-token cell is cheaper than a 1,024-token
    one by construction, so across lengths short inputs would "dominate" without saying anything. It is
    drawn among cells above the task's chance level (`chance`).
    """
    cost = samples.groupby(["task", "method", "length"])[["peak_mem_bytes", "prefill_s"]].median().reset_index()
    frame = summary_frame[summary_frame["value"].notna()].merge(cost, on=["task", "method", "length"], how="inner")
    frame = frame[["task", "method", "length", "metric", "value", "peak_mem_bytes", "prefill_s", "higher_is_better",
                   "beyond_window"]]  # fmt: skip
    parts = []
    for _, group in frame.groupby(["task", "length"]):
        group = group.copy()
        better, level = bool(group["higher_is_better"].iloc[0]), chance(str(group["task"].iloc[0]))
        group["pareto_mem"] = stats.pareto_front(group["peak_mem_bytes"], group["value"], better, level)
        group["pareto_prefill"] = stats.pareto_front(group["prefill_s"], group["value"], better, level)
        parts.append(group)
    return pd.concat(parts, ignore_index=True) if parts else frame


def paired(samples: pd.DataFrame, baseline: str, seed: int = 0) -> pd.DataFrame:
    """Compare each method with `baseline` on the same instances: mean difference, 95% CI, sign-flip p."""
    scored = samples[~samples["skipped"] & samples["score"].notna()]
    keys = ["task", "length", "instance_id"]
    base = scored[scored["method"] == baseline][[*keys, "score"]].drop_duplicates(keys)
    rows = []
    others = scored[scored["method"] != baseline]
    joined = others.merge(base, on=keys, suffixes=("", "_baseline"))
    for (task, length, method), group in joined.groupby(["task", "length", "method"]):
        mean, low, high = stats.paired_bootstrap(group["score"], group["score_baseline"], seed=seed)
        rows.append(
            {
                "task": task, "length": int(length), "method": method, "baseline": baseline, "pairs": len(group),
                "mean_diff": mean, "ci_low": low, "ci_high": high,
                "p_value": stats.sign_flip_pvalue(group["score"] - group["score_baseline"], seed=seed),
                "higher_is_better": higher_is_better(task),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


BUDGET_COLUMNS = ("data", "stages", "steps", "tokens", "longest_document", "seed")


def provenance(cells: pd.DataFrame, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Collect runs (dates, command, commit, device), package versions, method configs and task configs.

    Each method row carries its Config docstring, where deviations from the official defaults are written,
    and the public sources the method class declares (paper, official code).
    """
    from methods.base import METHODS

    if "host_load" not in runs:  # a store from before runs recorded the host's load
        runs = runs.assign(host_load=None)
    run_table = runs[["run_id", "started", "finished", "command", "git_commit", "device", "host_load"]]
    packages = pd.DataFrame(
        [{"package": k, "version": v} for k, v in (runs["packages"].iloc[-1] if len(runs) else {}).items()]
    )
    if len(runs) > 1:
        seen = runs["packages"].map(lambda p: tuple(sorted(p.items()))).nunique()
        packages.attrs["note"] = f"latest run shown; {seen} distinct package sets over {len(runs)} runs"
    methods = []
    for label, group in cells.groupby("label"):
        first = group.iloc[0]
        try:
            cls = METHODS.get(first["method"])
            doc, sources = cls.Config.__doc__ or "", cls.sources
        except (UserError, ImportError):
            doc, sources = "(method not registered in this lch version)", ""
        methods.append(
            {"method": label, "name": first["method"], "model": first["model"], "dtype": first["dtype"],
             "config": json.dumps(first["method_config"], sort_keys=True), "docstring": inspect.cleandoc(doc),
             "sources": sources}
        )  # fmt: skip
    configs = cells.assign(config=cells["task_config"].map(lambda c: json.dumps(c, sort_keys=True)))
    tasks = configs.drop_duplicates(["task", "task_version", "config"])[["task", "task_version", "headline", "config"]]
    tasks = tasks.assign(higher_is_better=tasks["task"].map(higher_is_better)).reset_index(drop=True)
    return {"runs": run_table, "packages": packages, "methods": pd.DataFrame(methods), "tasks": tasks,
            "training": training_budgets(cells)}  # fmt: skip


def training_budgets(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per trained method (label): its checkpoint's hash and what it was trained on (`training_budget`).

    Methods compared on one budget should show the same data, tokens and longest document; a label that
    ran with two checkpoints (retrained into the same folder) has a row for each; a store from before
    cells recorded budgets has the hash only.
    """
    rows = {}
    for label, config in zip(cells["label"], cells["method_config"], strict=True):
        for value in checkpoints_of(config):  # one row per checkpoint a label ran with
            budget = value.get("budget") or {}
            rows[(label, value["sha256"])] = {
                "method": label, "checkpoint": value.get("path"), "sha256": value["sha256"][:12],
                **{key: budget.get(key) for key in BUDGET_COLUMNS}, "steps": _steps_text(budget),
            }  # fmt: skip
    return pd.DataFrame(list(rows.values()), columns=["method", "checkpoint", "sha256", *BUDGET_COLUMNS])


def _steps_text(budget: dict) -> object:
    """The steps trained, and `44 of 56 (stopped early)` when they fall short of the stages' plan."""
    steps, stages = budget.get("steps"), budget.get("stages")
    planned = sum(int(stage.split(":")[1]) for stage in stages.split(",")) if stages else None
    return f"{steps} of {planned} (stopped early)" if steps is not None and planned and steps < planned else steps


def build(store_path: str | Path, baseline: str = "full", seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every report table from a store (seeded, so the same store gives the same numbers).

    Args:
        store_path: SQLite store written by `lch run` / `lch eval`.
        baseline: cell label the paired comparison is taken against.
        seed: seed of the bootstrap and permutation draws.

    Returns:
        Name -> DataFrame; see the module docstring for which names are always present.

    """
    data = load(store_path)
    cells, samples, runs = data["cells"], data["samples"], data["runs"]
    tables = {**data, "summary": summary(cells, samples, seed)}
    tables.update(
        {
            "passkey_depth": passkey_depth(samples),
            "perplexity": perplexity(cells, tables["summary"]),
            "position_nll": position_nll(samples),
            "longbench": longbench(cells, samples),
            "babilong": babilong(cells, samples),
            "cost": cost_samples(samples),
        }
    )
    tables["shared_context"] = shared_context(samples)
    tables["roofline"] = roofline(cells, samples, runs)
    tables["budget_curve"] = budget_curve(cells, tables["summary"])
    tables["ruler"] = ruler(tables["summary"])
    tables["ruler_effective"] = effective_lengths(tables["ruler"]) if not tables["ruler"].empty else pd.DataFrame()
    tables["scaling"] = scaling(tables["cost"])
    tables["tradeoff"] = tradeoff(tables["summary"], samples)
    tables["memory"] = matched_memory(cells, samples, tables["summary"], chance)
    tables["paired"] = paired(samples, baseline, seed)
    tables["memory_gain"] = token_gain(cells, samples, runs)
    tables["memory_gain_unpaired"] = unpaired(cells, runs)
    tables.update(provenance(cells, runs))
    always = {"cells", "samples", "runs", "summary", "packages", "methods", "tasks"}
    return {name: frame for name, frame in tables.items() if name in always or not frame.empty}

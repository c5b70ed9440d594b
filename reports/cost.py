"""Cost tables: per-sample cost against input length, and the fitted scaling exponent per method."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports import stats

# Column -> (label, unit) of every cost metric the report fits and plots.
METRICS = {
    "prefill_s": ("prefill time", "s"),
    "decode_ms_per_token": ("decode time per token", "ms"),
    "peak_mem_bytes": ("peak memory", "bytes"),
    "state_bytes": ("state (KV / memory)", "bytes"),
    "flops": ("FLOPs", "FLOP"),
}


MIN_FIT_LENGTHS = 3  # a line through two points always "fits"; three can show it does not


def cost_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per sample: method, task, length, input tokens, every cost metric (NaN where not recorded), beyond."""
    if samples.empty:
        return pd.DataFrame()
    frame = samples[["method", "task", "length", "input_tokens", "prefill_s", "decode_s", "decode_tokens",
                     "peak_mem_bytes", "state_bytes", "flops", "beyond_window", "under_load"]].copy()  # fmt: skip
    tokens = frame["decode_tokens"].astype(float)
    # Samples that decoded nothing (perplexity scores only) have no per-token decode time.
    frame["decode_ms_per_token"] = np.where(tokens > 0, 1000.0 * frame["decode_s"] / tokens.where(tokens > 0), np.nan)
    for column in METRICS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame.drop(columns=["decode_s", "decode_tokens"])


def medians(cost: pd.DataFrame) -> pd.DataFrame:
    """Median input tokens and cost per task x method x length (the points plotted and fitted), and `beyond_window`."""
    keys = ["task", "method", "length"]
    grouped = cost.groupby(keys)
    frame = grouped[["input_tokens", *METRICS]].median()
    frame["beyond_window"] = grouped["beyond_window"].any()
    frame["under_load"] = grouped["under_load"].any()
    return frame.reset_index()


def scaling(cost: pd.DataFrame) -> pd.DataFrame:
    """Least-squares log-log slope of each cost metric against input tokens, per task and method.

    The fit runs over the per-length medians (`medians`), so the line drawn with it passes through the
    plotted points, and only when the method has at least MIN_FIT_LENGTHS lengths; `lengths` counts
    them. Tasks are fitted apart: scoring a document and decoding an answer cost differently at the
    same length. Linear-cost methods come out near 1 and full attention's prefill approaches 2 at long
    inputs (at short inputs the linear MLP term dominates, so the slope sits between). Metrics a method
    never recorded (FLOPs without `flops: true`) are left out.
    """
    rows = []
    if cost.empty:
        return pd.DataFrame()
    for (task, method), group in medians(cost).groupby(["task", "method"]):
        for column in METRICS:
            measured = group[group[column].notna()]
            if measured.empty:
                continue
            fit = stats.scaling_exponent(measured["input_tokens"], measured[column])
            lengths = int(measured["length"].nunique())
            if lengths < MIN_FIT_LENGTHS:
                fit.update(exponent=float("nan"), coefficient=float("nan"), r2=float("nan"))
            rows.append({"task": task, "method": method, "metric": column, **fit, "lengths": lengths})
    return pd.DataFrame(rows).drop(columns="points")

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


def cost_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per sample: method, task, length, input tokens and every cost metric (NaN where not recorded)."""
    if samples.empty:
        return pd.DataFrame()
    frame = samples[["method", "task", "length", "input_tokens", "prefill_s", "decode_s", "decode_tokens",
                     "peak_mem_bytes", "state_bytes", "flops"]].copy()  # fmt: skip
    tokens = frame["decode_tokens"].astype(float)
    # Samples that decoded nothing (perplexity scores only) have no per-token decode time.
    frame["decode_ms_per_token"] = np.where(tokens > 0, 1000.0 * frame["decode_s"] / tokens.where(tokens > 0), np.nan)
    for column in METRICS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame.drop(columns=["decode_s", "decode_tokens"])


def scaling(cost: pd.DataFrame) -> pd.DataFrame:
    """Least-squares log-log slope of each cost metric against input tokens, per method (all tasks pooled).

    Linear-cost methods come out near 1 and full attention's prefill approaches 2 at long inputs
    (at short inputs the linear MLP term dominates, so the slope sits between). Metrics a method
    never recorded (FLOPs without `flops: true`) are left out.
    """
    rows = []
    if cost.empty:
        return pd.DataFrame()
    for method, group in cost.groupby("method"):
        for column in METRICS:
            if group[column].notna().sum() == 0:
                continue
            fit = stats.scaling_exponent(group["input_tokens"], group[column])
            rows.append({"method": method, "metric": column, **fit})
    return pd.DataFrame(rows)

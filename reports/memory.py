"""Matched-memory view: each method's score against its state as a share of full attention's KV cache.

A method's state is what it holds on the device after a sample (`state_bytes`: KV cache, memories;
blocks offloaded to host memory, as InfLLM's on CUDA, are not counted). The yardstick is full
attention's KV cache at the same model, dtype and length: the median state of the store's `full`
samples there (`measured`), else 2 x layers x KV heads x head dim x length x bytes per element from
the model's `config.json` when it is on this machine (`model config`), else none (the row keeps a
missing fraction and the report says so).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from harness.models import local_config
from reports import stats

REFERENCE = "full"  # the registered method whose cache is the yardstick
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_bytes_per_token(model: str, dtype: str) -> int | None:
    """Bytes of K and V per token over all layers (2 x layers x KV heads x head dim x element size), or None.

    None when the dtype is unknown or the config is not on this machine or lacks the Llama-style keys.
    """
    config = local_config(model)
    if config is None or dtype not in BYTES_PER_ELEMENT:
        return None
    try:
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * BYTES_PER_ELEMENT[dtype]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _measured(cells: pd.DataFrame, state: pd.Series) -> dict[tuple, float]:
    """(task, model, dtype, length) -> median state of the `full` cells there, the plain ones when there are any.

    RoPE scaling leaves the cache's size alone, but a plain run is the reference every other table uses.
    """
    full = cells[cells["method"] == REFERENCE].assign(state=lambda f: f["cell_id"].map(state))
    full = full[full["state"].notna()]
    full = full.assign(plain=full["method_config"].map(lambda c: c.get("rope_scaling", "none") == "none"))
    out = {}
    for key, group in full.groupby(["task", "model", "dtype", "length"]):
        out[key] = float((group[group["plain"]] if group["plain"].any() else group)["state"].median())
    return out


def matched_memory(
    cells: pd.DataFrame, samples: pd.DataFrame, summary: pd.DataFrame, chance: Callable[[str], float | None]
) -> pd.DataFrame:
    """Per scored cell: headline, median state, full attention's KV at that length, their ratio, Pareto flag.

    Args:
        cells: the `cells` table (`tables.load`).
        samples: the `samples` table.
        summary: the `summary` table (headline value and direction per cell).
        chance: task -> its chance level; a method no better than chance is never on the front, as in
            the accuracy-vs-cost view.

    Returns:
        Rows with task, method, length, metric, value, higher_is_better, beyond_window, model, state_bytes,
        full_kv_bytes, reference (`measured`, `model config` or empty), fraction (state / full KV) and
        pareto (no other method at that task and length has a fraction <= and a score at least as
        good, one strictly); empty when no scored cell recorded its state.

    """
    used = samples[~samples["skipped"] & samples["state_bytes"].notna()]
    state = used.groupby("cell_id")["state_bytes"].median()
    keys = cells[["cell_id", "label", "task", "length", "model", "dtype"]].rename(columns={"label": "method"})
    frame = summary[summary["value"].notna()].merge(keys, on=["task", "method", "length"])
    frame = frame.assign(state_bytes=frame["cell_id"].map(state).astype(float))
    frame = frame[frame["state_bytes"].notna()]
    if frame.empty:
        return pd.DataFrame()
    measured = _measured(cells, state)
    per_token = {pair: kv_bytes_per_token(*pair) for pair in set(zip(frame["model"], frame["dtype"], strict=True))}
    full, source = [], []
    for task, model, dtype, length in zip(frame["task"], frame["model"], frame["dtype"], frame["length"], strict=True):
        if (task, model, dtype, length) in measured:
            full.append(measured[(task, model, dtype, length)])
            source.append("measured")
        elif per_token[(model, dtype)]:
            full.append(float(per_token[(model, dtype)] * length))
            source.append("model config")
        else:
            full.append(np.nan)
            source.append("")
    frame = frame.assign(full_kv_bytes=full, reference=source)
    frame["fraction"] = frame["state_bytes"] / frame["full_kv_bytes"]
    parts = []
    for (task, _), group in frame.groupby(["task", "length"]):
        front = stats.pareto_front(group["fraction"], group["value"], bool(group["higher_is_better"].iloc[0]),
                                   chance(task))  # fmt: skip
        parts.append(group.assign(pareto=front))
    columns = ["task", "method", "length", "metric", "value", "higher_is_better", "beyond_window", "model",
               "state_bytes", "full_kv_bytes", "reference", "fraction", "pareto"]  # fmt: skip
    return pd.concat(parts, ignore_index=True)[columns].sort_values(["task", "length", "fraction", "method"],
                                                                     ignore_index=True)  # fmt: skip

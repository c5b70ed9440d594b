"""The per-cell summary of a store: what `lch results` prints and what scripts read as CSV."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from harness.store import open_existing

COLUMNS = ["method", "task", "length", "samples", "score", "prefill_s", "decode_s", "peak_mem_mb", "state_mb", "status",
           "checkpoint"]  # fmt: skip

QUERY = """
SELECT c.cell_id, c.label AS method, c.task, c.length, c.headline, c.status, c.error, c.aggregate, c.method_config,
       s.score, s.prefill_s, s.decode_s, s.peak_mem_bytes, s.state_bytes
FROM cells c LEFT JOIN samples s ON s.cell_id = c.cell_id
"""


def summary(path: str | Path) -> pd.DataFrame:
    """One row per cell: sample count, headline score, median prefill/decode seconds, peak memory, state, status.

    `score` is the task's headline metric from the cell's aggregate when the cell is done (e.g.
    token-weighted perplexity), else the mean over the samples stored so far. `checkpoint` tells apart
    cells of one label run with different trained weights.
    """
    with contextlib.closing(open_existing(path)) as db:
        rows = pd.read_sql_query(QUERY, db)
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = []
    for (_, method, task, length), group in rows.groupby(["cell_id", "method", "task", "length"], sort=False):
        first = group.iloc[0]
        scored = group.dropna(subset=["score"])
        # NULL (a running or failed cell) arrives as NaN when other cells have an aggregate
        aggregate = json.loads(first["aggregate"]) if isinstance(first["aggregate"], str) else {}
        score = aggregate.get(first["headline"], scored["score"].mean() if len(scored) else float("nan"))
        out.append(
            {
                "method": method, "task": task, "length": int(length), "samples": len(scored), "score": score,
                "prefill_s": scored["prefill_s"].median(), "decode_s": scored["decode_s"].median(),
                "peak_mem_mb": scored["peak_mem_bytes"].max() / 2**20, "state_mb": scored["state_bytes"].max() / 2**20,
                "status": first["status"], "checkpoint": _checkpoint(first["method_config"]),
            }
        )  # fmt: skip
    return pd.DataFrame(out, columns=COLUMNS).sort_values(["task", "length", "method"], ignore_index=True)


def _checkpoint(method_config: str | None) -> str:
    """`checkpoints/uio-small@935497b8` (its path and content hash) when the cell's method loaded one, else ``."""
    config = json.loads(method_config) if isinstance(method_config, str) else {}
    found = [value for value in config.values() if isinstance(value, dict) and "sha256" in value]
    return ", ".join(f"{value.get('path')}@{value['sha256'][:8]}" for value in found)


def render(frame: pd.DataFrame, fmt: str) -> str:
    """`table` (aligned text), `csv` or `json` (records)."""
    if fmt == "csv":
        return frame.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        return frame.to_json(orient="records", indent=2)
    if frame.empty:
        return "(no cells)"
    return frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")

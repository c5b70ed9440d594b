"""Cost at the roofline: each cell's FLOP rate against the matmul peak its run measured, from stored numbers only.

Per task, length and method: model FLOPs a token (`samples.prefill_flops` / input tokens, counted by
`methods.flops`), the achieved rate (the cell's summed FLOPs over its summed seconds) and its share of the
dense-matmul peak the run measured in the same dtype on the same device (`runs.matmul_peak`), for prefill
and decode apart. A share under `LOW_SHARE` is marked: a method slow by implementation, not by design.
Samples stored before lch counted FLOPs, and runs that measured no peak, leave their cells out.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from reports.text import LOADED, LOADED_NOTE, Section, fmt, human

LOW_SHARE = 50.0  # % of the peak under which a cell is marked
LOW = "↓"
LOW_NOTE = f"{LOW} under {LOW_SHARE:g} % of the measured matmul peak."


def roofline(cells: pd.DataFrame, samples: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per task x length x method: FLOPs a token, GFLOP/s and % of peak, for prefill and decode."""
    if "prefill_flops" not in samples or "matmul_peak" not in runs or samples["prefill_flops"].isna().all():
        return pd.DataFrame()
    peaks = {run: json.loads(peak)["gflops"] for run, peak in zip(runs["run_id"], runs["matmul_peak"], strict=True)
             if isinstance(peak, str)}  # fmt: skip
    peak_of = dict(zip(cells["cell_id"], cells["run_id"].map(peaks), strict=True))
    rows = []
    for (task, length, method, cell), group in samples.groupby(["task", "length", "method", "cell_id"], sort=True):
        peak = peak_of.get(cell)
        if peak is None or np.isnan(peak) or group["prefill_flops"].isna().all():
            continue
        row = {"task": task, "length": int(length), "method": method, "peak_gflops": peak,
               "under_load": bool(group["under_load"].any())}  # fmt: skip
        for phase, tokens in (("prefill", group["input_tokens"]), ("decode", group["decode_tokens"])):
            work, seconds = group[f"{phase}_flops"].sum(), group[f"{phase}_s"].sum()
            rate = work / seconds / 1e9 if seconds > 0 and work > 0 else np.nan
            row |= {f"{phase}_flops_per_token": work / tokens.sum() if tokens.sum() > 0 else np.nan,
                    f"{phase}_gflops": rate, f"{phase}_share": 100.0 * rate / peak}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def roofline_section(frame: pd.DataFrame) -> Section:
    """One table per task and length: FLOPs a token, achieved GFLOP/s and % of the peak, prefill and decode."""
    section = Section("Cost at the roofline")
    peaks = ", ".join(f"{fmt(p)} GFLOP/s" for p in sorted(frame["peak_gflops"].unique()))
    section.text(
        "Model FLOPs (linear layers, the attention pairs each query sees, a method's own retrieval and memory "
        "encoders; counted from the shapes lch's kernels run) over wall time, against the dense-matmul peak each "
        f"run measured on its device in its dtype ({peaks}). The share says how close a method runs to what the "
        "machine allows: a low share is time lost to implementation (small matmuls, Python, memory traffic), "
        "not work the method needs. Decode runs one token at a time and is bound by memory, not FLOPs."
    )
    for (task, length), group in frame.groupby(["task", "length"], sort=True):
        shown = pd.DataFrame({"method": group["method"]})
        for phase in ("prefill", "decode"):
            shares = group[f"{phase}_share"]
            shown[f"{phase} FLOP a token"] = group[f"{phase}_flops_per_token"].map(lambda v: human(v, "FLOP"))
            shown[f"{phase} GFLOP/s"] = group[f"{phase}_gflops"].map(fmt)
            shown[f"{phase} % of peak"] = [
                fmt(s) + (LOW if s < LOW_SHARE else "") + (LOADED if loaded else "")
                for s, loaded in zip(shares, group["under_load"], strict=True)
            ]
        section.table(shown, f"{task} at {length:,} tokens: achieved FLOP rate and share of the peak")
    section.text(LOW_NOTE)
    if frame["under_load"].any():
        section.text(LOADED_NOTE)
    return section

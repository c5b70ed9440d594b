"""Where memory helps, per token: a memory method's log-prob gain over its no-memory control.

A sweep names a method's control (`control:` on the method: the same local context without the memory,
e.g. UIO's 512-token segments scored alone). On every perplexity document both scored, a token's gain
is the control's NLL minus the method's (nats; above 0: the memory helped), from the per-token NLLs
the perplexity task stores (`tasks.token_nll`). Summarised per position bucket: the mean gain, and the
shares of tokens the memory helps or hurts by more than 2 nats, LongPPL's threshold for a token that
needs long context (arXiv 2410.23771): plain perplexity averages these few tokens away.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pydantic import ValidationError

from harness.sweep import SweepSpec, method_labels
from reports.tasks import bucket_width
from tasks import token_nll

KEY_GAIN = 2.0  # nats
COLUMNS = ["method", "control", "length", "position", "documents", "tokens", "mean_gain", "helped", "hurt"]


def controls(runs: pd.DataFrame) -> dict[str, str]:
    """Method label -> its control's label, from the sweeps the store's runs recorded (a later run wins).

    A run whose config is not a sweep (`lch eval`) or from an older sweep format names no control.
    """
    out = {}
    for text in runs["config"]:
        try:
            spec = SweepSpec.model_validate(json.loads(text) if text else {})
        except (ValidationError, ValueError):
            continue
        for method, label in zip(spec.methods, method_labels(spec), strict=True):
            if method.control is not None:
                out[label] = method.control
    return out


def token_gain(cells: pd.DataFrame, samples: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per memory method, control, length and position bucket: documents, tokens, mean gain, helped, hurt.

    `helped` / `hurt`: shares of the bucket's tokens whose gain is above `KEY_GAIN` / below `-KEY_GAIN`.
    Buckets cut each length into 8 to 16 (`reports.tasks.bucket_width`); documents are paired on instance id within
    the same task, length, model and seed, and a pair whose token counts differ is left out.
    """
    pairs = controls(runs)
    ppl = cells[(cells["task"] == "perplexity") & cells["given_label"].isin(pairs)]
    scored = samples[(samples["task"] == "perplexity") & ~samples["skipped"]]
    scored = scored.loc[scored["metadata"].map(lambda m: "token_nll" in m).astype(bool)]
    by_cell = {cell_id: group.set_index("instance_id") for cell_id, group in scored.groupby("cell_id")}
    rows = []
    for _, cell in ppl.iterrows():
        control = _control_cells(cells, cell, pairs)
        if control.empty or cell["cell_id"] not in by_cell or control["cell_id"].iloc[0] not in by_cell:
            continue
        mine, theirs = by_cell[cell["cell_id"]], by_cell[control["cell_id"].iloc[0]]
        gains = []
        for instance in mine.index.intersection(theirs.index):
            a = token_nll.decode(mine.at[instance, "metadata"]["token_nll"])
            b = token_nll.decode(theirs.at[instance, "metadata"]["token_nll"])
            if a.size == b.size:
                gains.append(b - a)
        width = bucket_width(int(cell["length"]))
        rows += _buckets(gains, width, cell["label"], control["label"].iloc[0], int(cell["length"]))
    return pd.DataFrame(rows, columns=COLUMNS)


def unpaired(cells: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The perplexity cells of a method with a control whose control has no cell at their length, model and seed.

    The per-token gain needs both; the report names these instead of dropping them without a word.
    """
    pairs = controls(runs)
    ppl = cells[(cells["task"] == "perplexity") & cells["given_label"].isin(pairs)]
    rows = [
        {"method": cell["label"], "control": pairs[cell["given_label"]], "length": int(cell["length"])}
        for _, cell in ppl.iterrows()
        if _control_cells(cells, cell, pairs).empty
    ]
    return pd.DataFrame(rows, columns=["method", "control", "length"])


def _control_cells(cells: pd.DataFrame, cell: pd.Series, pairs: dict[str, str]) -> pd.DataFrame:
    """The cells of `cell`'s control at the same task, length, model and seed."""
    keys = ["task", "length", "model", "seed"]
    same = (cells[keys] == cell[keys]).all(axis=1)
    return cells[same & (cells["given_label"] == pairs[cell["given_label"]])]


def _buckets(gains: list[np.ndarray], width: int, method: str, control: str, length: int) -> list[dict]:
    """One row per position bucket of the documents' gains (token `i` of a gain array is position `i + 1`)."""
    if not gains:
        return []
    rows = []
    for start in range(0, max(g.size for g in gains) + 1, width):
        parts = [g[max(start - 1, 0) : start + width - 1] for g in gains]
        chunk = np.concatenate(parts)
        if chunk.size:
            rows.append(
                {"method": method, "control": control, "length": length, "position": start,
                 "documents": sum(p.size > 0 for p in parts), "tokens": chunk.size, "mean_gain": chunk.mean(),
                 "helped": (chunk > KEY_GAIN).mean(), "hurt": (chunk < -KEY_GAIN).mean()}
            )  # fmt: skip
    return rows

"""The display primitives of reports: sections of blocks, the marks on caveated cells, number formatting.

Both writers (markdown and HTML) render the same blocks, so a cell shown as OOM in one is shown as
OOM in the other. Numbers are formatted here; escaping is the writers' job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from reports import axes

STATUS_TEXT = {"oom": "OOM", "failed": "failed", "over_length": "over length"}
DAGGER = "†"
FOOTNOTE = f"{DAGGER} input longer than the base model's trained window."
LOADED = "§"
LOADED_NOTE = (
    f"{LOADED} timed while other processes used more than a quarter of the machine's CPU (per-sample "
    "`others_cpu_share`): its times overstate the method's cost."
)
MEMORIES = "*"
MEMORIES_NOTE = f"{MEMORIES} more memories read than the checkpoint was trained with (`beyond_trained_memory`)."
LOOKAHEAD = "‡"
LOOKAHEAD_NOTE = (
    f"{LOOKAHEAD} scored with a look-ahead: the method's score() saw tokens after the one it predicts "
    "(InfLLM's score_lookahead), so it is not comparable with causal methods."
)


@dataclass
class Block:
    """One display element: `kind` is text, table, figure or code."""

    kind: str
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    name: str = ""  # figure name (PNG file stem)


@dataclass
class Section:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def text(self, text: str) -> None:
        """Append a paragraph."""
        self.blocks.append(Block("text", text=text))

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        """Append a table of already formatted values (index ignored)."""
        rows = [[str(v) for v in row] for row in frame.itertuples(index=False)]
        self.blocks.append(Block("table", text=caption, columns=[str(c) for c in frame.columns], rows=rows))

    def figure(self, name: str, caption: str) -> None:
        """Append a figure by name (the writer adds the PNG)."""
        self.blocks.append(Block("figure", text=caption, name=name))

    def footnote(self, beyond, noncausal=(), memories=(), loaded=()) -> None:
        """Append the footnotes of the marks a table above used (any of the flags true), in `mark`'s order."""
        for flags, note in ((beyond, FOOTNOTE), (noncausal, LOOKAHEAD_NOTE), (memories, MEMORIES_NOTE),
                            (loaded, LOADED_NOTE)):  # fmt: skip
            if any(bool(flag) for flag in flags):
                self.text(note)


def mark(text: str, beyond, noncausal=False, memories=False, loaded=False) -> str:
    """`0.667` -> `0.667†`: marks for a cell's caveats, each with its footnote (`Section.footnote`).

    † past the trained window, ‡ a look-ahead score, * past the trained memories, § timed under load.
    """
    marks = (DAGGER, beyond), (LOOKAHEAD, noncausal), (MEMORIES, memories), (LOADED, loaded)
    return text + "".join(symbol for symbol, on in marks if bool(on))


def fmt(value, digits: int = 3) -> str:
    """Format a number short enough for a table cell; `–` for missing.

    The text depends on the rounded value only, so numbers an ulp apart print alike on every machine:
    0.99999999 prints as 1.0 does (`1.00`, not `1`), 9.9996 as 10.0 does (`10.0`).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) < 1e-12:
        value = 0.0  # a fitted slope of 6e-16 is a flat line; printing it in e-notation misleads
    text = _short(float(value), digits)
    return _short(float(text.replace(",", "")), digits)  # rounding may carry into the next magnitude's format


def _short(value: float, digits: int) -> str:
    magnitude = abs(value)
    if value.is_integer() and magnitude >= 100 or magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.{digits - 1}f}" if magnitude < 10 else f"{value:.{max(digits - 2, 0)}f}"
    return f"{value:.{digits}g}"


def human(value, unit: str) -> str:
    """A cost in its unit (`s`, `ms`, `bytes`, `FLOP`) as the figures label it: `392 ms`, `110 MiB`; `–` if missing."""
    if value is None or not math.isfinite(value):
        return "–"
    factor, family = axes.UNITS[unit]
    return axes.LABELS[family](value * factor)


def count(value) -> str:
    """Format a count (stored as float in aggregates) as an integer; `–` for missing."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{int(value):,}"


def score_text(row) -> str:
    """`0.667 [0.333, 1.00] n=3` (`0.667†` past the trained window), or the failure status (OOM is never a blank)."""
    if row["status"] in STATUS_TEXT:
        return STATUS_TEXT[row["status"]] + (f" (after {row['n']} samples)" if row["n"] else "")
    if row["n"] == 0 and not (isinstance(row["value"], float) and math.isfinite(row["value"])):
        return "no samples" if row["status"] != "running" else "running (no samples)"
    interval = ""
    if math.isfinite(row["ci_low"]):
        low, high = fmt(row["ci_low"]), fmt(row["ci_high"])
        interval = " (no spread)" if low == high else f" [{low}, {high}]"  # every sample scored alike
    value = mark(
        fmt(row["value"]), row.get("beyond_window", False), row.get("noncausal", False), row.get("beyond_memory", False)
    )
    text = f"{value}{interval} n={row['n']}" + (f" ({row['skipped']} skipped)" if row["skipped"] else "")
    return text + (" (running)" if row["status"] == "running" else "")

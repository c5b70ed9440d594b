"""Comparison reports built from a results store: tables (`build`), figures and the HTML/markdown writer.

`reports.build(store_path, baseline="full")` returns the report's tables as pandas DataFrames for
notebooks; `lch report STORE --out DIR` writes `report.md`, `report.html` and the figures.
"""

from __future__ import annotations

from reports.tables import build

__all__ = ["build"]

"""Report figures (seaborn on matplotlib), one colour per method across every figure.

Figures are built as bare `matplotlib.figure.Figure` objects, never through `pyplot`, so building a
report neither needs a display nor changes the backend or global state of a notebook using it.
`figures(tables, baseline)` returns name -> (figure, caption); `render` saves them as PNG.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.cost import METRICS

MAX_LENGTH_PANELS = 3


def palette(methods, baseline: str | None = None) -> dict[str, tuple]:
    """Map method -> colour, stable for a given set of methods (baseline first, then alphabetical)."""
    ordered = sorted(set(methods), key=lambda m: (m != baseline, m))
    colours = sns.color_palette("tab10" if len(ordered) <= 10 else "husl", len(ordered))
    return dict(zip(ordered, colours, strict=True))


def _figure(panels: int, width: float = 4.6, height: float = 3.6, columns: int = 4) -> tuple[Figure, list]:
    """Make a constrained-layout figure with `panels` axes, wrapped into rows of at most `columns`."""
    cols = min(panels, columns)
    rows = -(-panels // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def passkey_heatmaps(depth: pd.DataFrame, colours: dict) -> Figure:
    """Accuracy per needle depth x length, one red-to-green panel per method (0..1)."""
    methods = sorted(depth["method"].unique(), key=list(colours).index)
    fig, axes = _figure(len(methods), width=max(3.2, 0.9 * depth["length"].nunique() + 2.0))
    for ax, method in zip(axes, methods, strict=True):
        grid = depth[depth["method"] == method].pivot(index="depth", columns="length", values="accuracy")
        sns.heatmap(grid, ax=ax, cmap="RdYlGn", vmin=0.0, vmax=1.0, annot=True, fmt=".2f", cbar=ax is axes[-1])
        ax.set_title(method, color=colours[method])
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel("needle depth")
    return fig


def _line(ax, frame: pd.DataFrame, x: str, y: str, colours: dict, low: str | None = None, high: str | None = None):
    for method, group in frame.groupby("method"):
        group = group.sort_values(x)
        ax.plot(group[x], group[y], marker="o", color=colours[method], label=method)
        if low and high and group[low].notna().any():
            ax.fill_between(group[x], group[low], group[high], color=colours[method], alpha=0.15, linewidth=0)


def passkey_lengths(summary: pd.DataFrame, colours: dict) -> Figure:
    """Passkey accuracy vs input length per method, with the 95% bootstrap band."""
    fig, (ax,) = _figure(1, width=6.0)
    _line(ax, summary[(summary["task"] == "passkey") & summary["value"].notna()], "length", "value", colours,
          "ci_low", "ci_high")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set(xlabel="input length (tokens)", ylabel="accuracy", ylim=(-0.05, 1.05))
    ax.legend(fontsize="small")
    return fig


def perplexity_lengths(table: pd.DataFrame, colours: dict) -> Figure:
    """Token-weighted perplexity vs length per method (log x), with the 95% document-bootstrap band."""
    fig, (ax,) = _figure(1, width=6.0)
    _line(ax, table[table["perplexity"].notna()], "length", "perplexity", colours, "ci_low", "ci_high")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="input length (tokens)", ylabel="perplexity (lower is better)")
    ax.legend(fontsize="small")
    return fig


def position_curves(curve: pd.DataFrame, colours: dict, protocol: str) -> Figure:
    """Plot NLL per token by position bucket, one panel per length (the longest few), to show if far context helps."""
    lengths = sorted(curve["length"].unique())[-MAX_LENGTH_PANELS:]
    fig, axes = _figure(len(lengths), height=3.9)
    for ax, length in zip(axes, lengths, strict=True):
        _line(ax, curve[curve["length"] == length], "position", "nll", colours)
        ax.set(title=f"length {length}", xlabel="token position (bucket start)", ylabel="NLL per token")
    axes[0].legend(fontsize="small")
    fig.supxlabel(protocol, fontsize="small")  # e.g. "protocol=sliding, window=4096, stride=2048"
    return fig


def cost_curves(cost: pd.DataFrame, scaling: pd.DataFrame, colours: dict) -> Figure:
    """Each recorded cost metric vs input tokens per method (log-log), with the fitted power law."""
    metrics = [m for m in METRICS if cost[m].gt(0).any()]
    fig, axes = _figure(len(metrics), width=4.2, columns=3)
    points = cost.groupby(["method", "input_tokens"])[metrics].median().reset_index()
    for ax, metric in zip(axes, metrics, strict=True):
        for method, group in points.groupby("method"):
            group = group[group[metric] > 0]
            ax.scatter(group["input_tokens"], group[metric], color=colours[method], label=method, s=18)
            fit = scaling[(scaling["method"] == method) & (scaling["metric"] == metric)]
            if len(fit) and np.isfinite(fit["exponent"].iloc[0]):
                k, c = fit["exponent"].iloc[0], fit["coefficient"].iloc[0]
                x = np.geomspace(group["input_tokens"].min(), group["input_tokens"].max(), 20)
                ax.plot(x, c * x**k, color=colours[method], linewidth=1, alpha=0.8)
        label, unit = METRICS[metric]
        ax.set(xscale="log", yscale="log", xlabel="input tokens", ylabel=f"{label} ({unit})", title=label)
    axes[0].legend(fontsize="small")
    return fig


def tradeoff(frame: pd.DataFrame, colours: dict) -> Figure:
    """Headline score vs peak memory and vs prefill time per cell; Pareto-optimal cells ringed and joined."""
    fig, axes = _figure(2, width=5.2)
    better = bool(frame["higher_is_better"].iloc[0])
    for ax, (cost, flag, label) in zip(
        axes,
        [("peak_mem_bytes", "pareto_mem", "peak memory (MiB)"), ("prefill_s", "pareto_prefill", "prefill (s)")],
        strict=True,
    ):
        scale = 2**20 if cost == "peak_mem_bytes" else 1.0
        for method, group in frame.groupby("method"):
            ax.scatter(group[cost] / scale, group["value"], color=colours[method], label=method, s=30)
            for _, row in group.iterrows():
                ax.annotate(str(row["length"]), (row[cost] / scale, row["value"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        front = frame[frame[flag]].sort_values(cost)
        ax.step(front[cost] / scale, front["value"], where="post", color="black", linewidth=1, alpha=0.6)
        ax.scatter(front[cost] / scale, front["value"], facecolors="none", edgecolors="black", s=110,
                   label="Pareto front")  # fmt: skip
        direction = "higher" if better else "lower"
        ax.set(xscale="log", xlabel=label, ylabel=f"{frame['metric'].iloc[0]} ({direction} is better)")
    axes[0].legend(fontsize="small")
    return fig


def figures(tables: dict[str, pd.DataFrame], baseline: str | None = None) -> dict[str, tuple[Figure, str]]:
    """Every figure the tables support: name -> (figure, caption)."""
    colours = palette(tables["summary"]["method"], baseline)
    out: dict[str, tuple[Figure, str]] = {}
    if "passkey_depth" in tables:
        out["passkey_heatmap"] = (passkey_heatmaps(tables["passkey_depth"], colours),
                                  "Passkey accuracy per needle depth and input length (red 0, green 1).")  # fmt: skip
    if (tables["summary"]["task"] == "passkey").any() and tables["summary"]["value"].notna().any():
        out["passkey_length"] = (passkey_lengths(tables["summary"], colours),
                                 "Passkey accuracy vs input length; band: 95% bootstrap interval.")  # fmt: skip
    if "perplexity" in tables and tables["perplexity"]["perplexity"].notna().any():
        caption = "Token-weighted perplexity vs input length; band: 95% document bootstrap."
        out["perplexity_length"] = (perplexity_lengths(tables["perplexity"], colours), caption)
    if "position_nll" in tables:
        protocols = "; ".join(sorted(set(tables["perplexity"]["protocol"]))) if "perplexity" in tables else ""
        out["position_nll"] = (position_curves(tables["position_nll"], colours, protocols),
                               f"NLL per token by position (lower is better). Protocol: {protocols}.")  # fmt: skip
    if "cost" in tables:
        caption = "Cost vs input tokens (log-log, median per length), lines: least-squares power-law fit."
        out["cost"] = (cost_curves(tables["cost"], tables["scaling"], colours), caption)
    for task, frame in tables.get("tradeoff", pd.DataFrame(columns=["task"])).groupby("task"):
        caption = f"{task}: score vs cost per cell (labels: length); ringed: Pareto front."
        out[f"tradeoff_{task}"] = (tradeoff(frame, colours), caption)
    return out

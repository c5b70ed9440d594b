"""Report figures (seaborn on matplotlib), one colour per method across every figure.

Figures are built as bare `matplotlib.figure.Figure` objects, never through `pyplot`, so building a
report neither needs a display nor changes the backend or global state of a notebook using it.
`figures(tables, baseline)` returns name -> (figure, caption); `render` saves them as PNG.
Length axes carry ticks at the measured lengths only (`reports.axes`); a cell whose inputs run past
the base model's trained window is drawn with a hollow marker (its `beyond_window` flag).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reports import axes
from reports.cost import METRICS, medians
from reports.roofline import LOW_SHARE
from reports.tasks import file_stem

MAX_LENGTH_PANELS = 3
BEYOND_LABEL = "hollow: input past the trained window"
# The matched-memory panels' axes width and an x-small character's width, in points (approximate: the
# layout is only known at draw time), to tell when a method's label reaches the next point.
LABEL_PANEL_PT = 240.0
LABEL_CHAR_PT = 4.3
TRADEOFF_COSTS = {"memory": ("peak_mem_bytes", "pareto_mem", "bytes", "peak memory"),
                  "prefill": ("prefill_s", "pareto_prefill", "s", "prefill time")}  # fmt: skip


def palette(methods, baseline: str | None = None) -> dict[str, tuple]:
    """Map method -> colour, stable for a given set of methods (baseline first, then alphabetical)."""
    ordered = sorted(set(methods), key=lambda m: (m != baseline, m))
    colours = sns.color_palette("tab10" if len(ordered) <= 10 else "husl", len(ordered))
    return dict(zip(ordered, colours, strict=True))


def _figure(panels: int, width: float = 4.6, height: float = 3.6, columns: int = 4, sharey: bool = False):
    """Make a constrained-layout figure with exactly `panels` axes in rows of at most `columns`.

    A short last row is centred instead of padded with empty axes: each panel spans two cells of a
    grid twice as wide as the number of columns.
    """
    rows = -(-panels // columns)
    cols = -(-panels // rows)  # 4 panels in rows of 3 become 2 x 2, not 3 + 1
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2 * cols)
    out = []
    for i in range(panels):
        row, col = divmod(i, cols)
        offset = cols - min(cols, panels - row * cols)  # empty half-cells on each side of a short row
        start = 2 * col + offset
        out.append(fig.add_subplot(grid[row, start : start + 2], sharey=out[0] if sharey and out else None))
    return fig, out


def _points(ax, x, y, colour, beyond, size: float = 36, **kwargs) -> None:
    """Scatter filled markers, hollow ones where `beyond` (past the trained window)."""
    beyond = np.asarray(beyond, dtype=bool)
    x, y = np.asarray(x), np.asarray(y)
    ax.scatter(x[~beyond], y[~beyond], color=colour, s=size, zorder=3, **kwargs)
    # On top and a little larger: a hollow marker under another method's filled one would vanish.
    ax.scatter(x[beyond], y[beyond], facecolors="white", edgecolors=colour, linewidths=1.5, s=1.6 * size, zorder=4,
               **kwargs)  # fmt: skip


def _columns(handles: list, panels: list) -> int:
    """Legend columns that fit the figure's width: about two per panel across, at most one row per handle."""
    across = len({round(ax.get_position().x0, 3) for ax in panels})
    return max(1, min(len(handles), 2 * across))


def _handle(colour, label: str, line: bool = True, hollow: bool = False) -> Line2D:
    face = "white" if hollow else colour
    return Line2D([], [], color=colour, marker="o", markerfacecolor=face, linestyle="-" if line else "none",
                  label=label)  # fmt: skip


def _beyond_handle() -> Line2D:
    return _handle("0.35", BEYOND_LABEL, line=False, hollow=True)


def _line(ax, frame: pd.DataFrame, x: str, y: str, colours: dict, band: tuple[str, str] | None = None, per_point=True):
    """One line per method with markers and an optional band; returns the legend handles.

    With `per_point`, a point whose cell ran past the trained window is hollow. Otherwise (x is not
    the input length, so one cell is the whole line) the method's legend entry says so instead.
    """
    handles, hollow = [], False
    for method, group in frame.groupby("method"):
        group = group.sort_values(x)
        colour, beyond = colours[method], group["beyond_window"].to_numpy(dtype=bool)
        ax.plot(group[x], group[y], color=colour)
        _points(ax, group[x], group[y], colour, beyond if per_point else np.zeros(len(group), dtype=bool))
        if band and group[band[0]].notna().any():
            ax.fill_between(group[x], group[band[0]], group[band[1]], color=colour, alpha=0.15, linewidth=0)
        whole = not per_point and beyond.any()
        handles.append(_handle(colour, f"{method} (input past the trained window)" if whole else method))
        hollow = hollow or (per_point and beyond.any())
    return [*handles, _beyond_handle()] if hollow else handles


def passkey_heatmaps(depth: pd.DataFrame, colours: dict) -> Figure:
    """Accuracy per needle depth x length, one red-to-green panel per method (0..1); † marks lengths past the window."""
    methods = sorted(depth["method"].unique(), key=list(colours).index)
    fig, panels = _figure(len(methods), width=max(3.2, 0.55 * depth["length"].nunique() + 1.8), columns=3)
    for ax, method in zip(panels, methods, strict=True):
        mine = depth[depth["method"] == method]
        grid = mine.pivot(index="depth", columns="length", values="accuracy")
        sns.heatmap(grid, ax=ax, cmap="RdYlGn", vmin=0.0, vmax=1.0, annot=True, fmt=".2f", cbar=ax is panels[-1])
        beyond = set(mine.loc[mine["beyond_window"], "length"]) if "beyond_window" in mine else set()
        ax.set_xticklabels([axes.tokens(n) + (" †" if n in beyond else "") for n in grid.columns])
        ax.set_title(method, color=colours[method])
        ax.set_xlabel("input length (tokens; † past the trained window)" if beyond else "input length (tokens)")
        ax.set_ylabel("needle depth")
        ax.tick_params(axis="y", labelrotation=0)
    return fig


def passkey_lengths(summary: pd.DataFrame, colours: dict) -> Figure:
    """Passkey accuracy vs input length per method, with the 95% bootstrap band."""
    fig, (ax,) = _figure(1, width=6.0)
    frame = summary[(summary["task"] == "passkey") & summary["value"].notna()]
    handles = _line(ax, frame, "length", "value", colours, ("ci_low", "ci_high"))
    axes.length_axis(ax, frame["length"])
    ax.set(xlabel="input length (tokens)", ylabel="accuracy", ylim=(-0.05, 1.05))
    ax.legend(handles=handles, fontsize="small")
    return fig


def babilong_lengths(table: pd.DataFrame, colours: dict) -> Figure:
    """BABILong accuracy vs input length, one panel per bAbI task and one for their average, a line per method.

    Lengths sit at even steps (BABILong's 0 is the facts alone, which has no place on a log axis); a dotted
    grey line is the task's chance level (its best constant answer) at the shortest length.
    """
    tasks = sorted(set(table["babi_task"]) - {"avg"})
    names = [*tasks, "avg"] if len(tasks) > 1 else tasks
    lengths = sorted(table["length"].unique())
    step = {length: i for i, length in enumerate(lengths)}
    fig, panels = _figure(len(names), width=3.4, height=3.0, columns=3, sharey=True)
    for ax, name in zip(panels, names, strict=True):
        mine = table[table["babi_task"] == name]
        for method, group in mine.groupby("method"):
            group = group.sort_values("length")
            ax.plot(group["length"].map(step), group["accuracy"], color=colours[method], marker="o")
        chance = mine.sort_values("length")["chance"].dropna()
        if not chance.empty:
            ax.axhline(chance.iloc[0], color="0.5", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(lengths)), [axes.tokens(n) for n in lengths])
        ax.set(title=name, ylim=(-3, 103), xlabel="input length (tokens)")
    panels[0].set_ylabel("accuracy (%)")
    _method_legend(fig, panels, table["method"], colours)
    return fig


def _method_legend(fig: Figure, panels: list, methods, colours: dict) -> None:
    """One legend entry per method drawn, in palette order, below the panels (inside one it hides lines)."""
    handles = [_handle(colours[m], m) for m in sorted(set(methods), key=list(colours).index)]
    fig.legend(handles=handles, loc="outside lower center", ncols=_columns(handles, panels), fontsize="small")


def roofline_lengths(table: pd.DataFrame, colours: dict) -> Figure:
    """Prefill's share of the measured matmul peak vs input length, one panel per task, a line per method."""
    tasks = sorted(table["task"].unique())
    fig, panels = _figure(len(tasks), width=4.6, height=3.4, columns=3, sharey=True)
    for ax, task in zip(panels, tasks, strict=True):
        mine = table[table["task"] == task]
        for method, group in mine.groupby("method"):
            group = group.sort_values("length")
            ax.plot(group["length"], group["prefill_share"], color=colours[method], marker="o")
        ax.axhline(LOW_SHARE, color="0.5", linestyle=":", linewidth=1)
        axes.length_axis(ax, mine["length"])
        ax.set(title=task, ylim=(0, max(105.0, float(mine["prefill_share"].max()) + 5)), xlabel="input length (tokens)")
    panels[0].set_ylabel("prefill, % of matmul peak")
    _method_legend(fig, panels, table["method"], colours)
    return fig


def budget_curves(table: pd.DataFrame, colours: dict) -> Figure:
    """A task's headline vs steps trained, one panel per length: a line per run, a dashed level per control."""
    lengths = sorted(table["length"].unique())
    fig, panels = _figure(len(lengths), width=4.6, height=3.4, columns=3, sharey=True)
    for ax, length in zip(panels, lengths, strict=True):
        mine = table[table["length"] == length]
        handles = []
        for family, group in mine[mine["family"].notna()].groupby("family"):
            group = group.sort_values("steps")
            colour = colours.get(group["method"].iloc[-1], "0.2")
            ax.plot(group["steps"], group["value"], color=colour, marker="o")
            handles.append(_handle(colour, family))
        for _, control in mine[mine["family"].isna()].iterrows():
            colour = colours.get(control["method"], "0.5")
            ax.axhline(control["value"], color=colour, linestyle="--", linewidth=1)
            handles.append(Line2D([], [], color=colour, linestyle="--", label=control["method"]))
        ax.set(title=f"{length:,} tokens", xlabel="steps trained")
        ax.legend(handles=handles, fontsize="small")
    panels[0].set_ylabel(str(table["metric"].iloc[0]))
    return fig


def perplexity_lengths(table: pd.DataFrame, colours: dict) -> Figure:
    """Token-weighted perplexity vs length per method (log x), with the 95% document-bootstrap band."""
    fig, (ax,) = _figure(1, width=6.0)
    frame = table[table["perplexity"].notna()]
    handles = _line(ax, frame, "length", "perplexity", colours, ("ci_low", "ci_high"))
    axes.length_axis(ax, frame["length"])
    ax.set(xlabel="input length (tokens)", ylabel="perplexity (lower is better)")
    ax.legend(handles=handles, fontsize="small")
    return fig


def position_curves(curve: pd.DataFrame, colours: dict, protocol: str) -> Figure:
    """Plot NLL per token by position bucket, one panel per length (the longest few), to show if far context helps."""
    lengths = sorted(curve["length"].unique())[-MAX_LENGTH_PANELS:]
    shown = curve[curve["length"].isin(lengths)]
    fig, panels = _figure(len(lengths), height=3.9, sharey=True)
    for ax, length in zip(panels, lengths, strict=True):
        _line(ax, shown[shown["length"] == length], "position", "nll", colours, per_point=False)
        axes.token_formatter(ax)
        ax.set(title=f"length {axes.tokens(length)}", xlabel="token position (bucket start)", ylabel="NLL per token")
    handles = []  # one legend: a method past the trained window says at which lengths
    for method in sorted(shown["method"].unique(), key=list(colours).index):
        past = sorted(shown.loc[(shown["method"] == method) & shown["beyond_window"], "length"].unique())
        where = f" (input past the trained window at {', '.join(axes.tokens(n) for n in past)})" if past else ""
        handles.append(_handle(colours[method], method + where))
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", ncols=min(len(handles), 3),
               frameon=False, title=protocol, title_fontsize="small")  # fmt: skip
    return fig


def _fit(fit: pd.DataFrame) -> tuple[float, float]:
    """The fitted (exponent, coefficient), NaN when not fitted (< 3 lengths)."""
    if fit.empty or not np.isfinite(fit["exponent"].iloc[0]):
        return float("nan"), float("nan")
    return float(fit["exponent"].iloc[0]), float(fit["coefficient"].iloc[0])


def cost_curves(cost: pd.DataFrame, scaling: pd.DataFrame, colours: dict) -> Figure:
    """Each recorded cost metric vs input tokens per method (log-log, one task), with its fitted power law.

    Points are the per-length medians; the line is the least-squares fit through them (drawn only over
    the measured range, and only for 3+ lengths; its exponent is in the report's table). One legend for
    the figure. With one length there is no curve to draw: `cost_dots` shows the methods side by side.
    """
    points = medians(cost)
    if points["length"].nunique() == 1:
        return cost_dots(points, colours)
    metrics = [m for m in METRICS if points[m].gt(0).any()]
    fig, panels = _figure(len(metrics), width=4.4, height=3.6, columns=3)
    ticks = points.groupby("length")["input_tokens"].median()  # one tick per measured length
    for ax, metric in zip(panels, metrics, strict=True):
        label, unit = METRICS[metric]
        factor = axes.UNITS[unit][0]
        drawn = [points.loc[points[metric] > 0, metric] * factor]
        for method, group in points.groupby("method"):
            group = group[group[metric] > 0].sort_values("input_tokens")
            if group.empty:
                continue
            colour = colours[method]
            _points(ax, group["input_tokens"], group[metric] * factor, colour, group["beyond_window"], size=24)
            k, c = _fit(scaling[(scaling["method"] == method) & (scaling["metric"] == metric)])
            if np.isfinite(k):
                x = np.geomspace(group["input_tokens"].min(), group["input_tokens"].max(), 32)
                ax.plot(x, c * x**k * factor, color=colour, linewidth=1.2, alpha=0.85)
                drawn.append(pd.Series(c * x**k * factor))
        axes.length_axis(ax, ticks)
        axes.log_axis(ax, pd.concat(drawn), unit)
        ax.set(xlabel="input tokens", ylabel=label, title=label)
    handles = [_handle(colours[m], m) for m in sorted(points["method"].unique(), key=list(colours).index)]
    if points["beyond_window"].any():
        handles.append(_beyond_handle())
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", ncols=min(len(handles), 5),
               frameon=False)  # fmt: skip
    return fig


def cost_dots(points: pd.DataFrame, colours: dict) -> Figure:
    """Each recorded cost metric per method at the one measured length: a dot per method (log x), named on y."""
    metrics = [m for m in METRICS if points[m].gt(0).any()]
    methods = sorted(points["method"].unique(), key=list(colours).index)
    fig, panels = _figure(len(metrics), width=4.0, height=0.35 * len(methods) + 1.4, columns=2, sharey=True)
    for ax, metric in zip(panels, metrics, strict=True):
        label, unit = METRICS[metric]
        factor = axes.UNITS[unit][0]
        shown = points[points[metric] > 0]
        for method, row in shown.set_index("method").iterrows():
            _points(ax, [row[metric] * factor], [methods.index(method)], colours[method], [row["beyond_window"]])
        axes.log_axis(ax, shown[metric] * factor, unit, axis="x")
        ax.set_yticks(range(len(methods)), methods)
        ax.set(title=label, ylim=(len(methods) - 0.5, -0.5))
        ax.grid(axis="x", alpha=0.3)
    if points["beyond_window"].any():
        fig.legend(handles=[_beyond_handle()], loc="outside lower center", fontsize="small", frameon=False)
    return fig


def tradeoff(frame: pd.DataFrame, colours: dict, cost: str) -> Figure:
    """Headline score vs one cost (`memory` or `prefill`), one panel per input length; Pareto front ringed and joined.

    Fronts are per length (the `pareto_*` flags of `tables.tradeoff`): across lengths a shorter input
    is cheaper by construction, so comparing cells of different lengths says nothing about methods.
    """
    column, flag, unit, label = TRADEOFF_COSTS[cost]
    lengths = sorted(frame["length"].unique())
    fig, panels = _figure(len(lengths), width=3.4, height=3.0, columns=3, sharey=True)
    better = bool(frame["higher_is_better"].iloc[0])
    for ax, length in zip(panels, lengths, strict=True):
        cells = frame[(frame["length"] == length) & (frame[column] > 0)]
        for method, group in cells.groupby("method"):
            _points(ax, group[column], group["value"], colours[method], group["beyond_window"], size=40)
        front = cells[cells[flag]].sort_values(column)
        ax.step(front[column], front["value"], where="post", color="black", linewidth=1, alpha=0.6)
        ax.scatter(front[column], front["value"], facecolors="none", edgecolors="black", s=150, zorder=2)
        axes.log_axis(ax, cells[column], unit, axis="x", max_ticks=4)  # a narrow panel: four labels fit
        ax.set(title=f"length {axes.tokens(length)}", xlabel=label)
        ax.tick_params(axis="x", labelsize="small", labelrotation=30)
    direction = "higher" if better else "lower"
    panels[0].set_ylabel(f"{frame['metric'].iloc[0]}\n({direction} is better)")
    handles = [_handle(colours[m], m, line=False) for m in sorted(frame["method"].unique(), key=list(colours).index)]
    handles.append(Line2D([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black",
                          color="black", alpha=0.6, label="Pareto front at that length"))  # fmt: skip
    if frame["beyond_window"].any():
        handles.append(_beyond_handle())
    fig.legend(handles=handles, loc="outside lower center", ncols=_columns(handles, panels), fontsize="small")
    return fig


def _label_offsets(percent: np.ndarray, value: np.ndarray, labels: list[str], xlim: tuple[float, float]) -> list[float]:
    """Vertical offsets (points) of labels drawn right of their points: above, else the nearest free line around.

    Methods of equal state and score (full attention and a window longer than the input) share a point,
    and a long label reaches the next point on a log axis; either way two labels would print over each
    other. `percent` must be ascending, `xlim` the axis limits already set.
    """
    per_decade = LABEL_PANEL_PT / np.log10(xlim[1] / xlim[0])
    x, span = np.log10(percent), float(np.ptp(value)) or 1.0
    reach = np.array([(4 + LABEL_CHAR_PT * len(label)) / per_decade for label in labels])  # in decades
    slots: list[int] = []  # 0, 2, 4, ...: lines above the point; 1, 3, 5, ...: lines below it
    for i in range(len(x)):
        taken = {slots[j] for j in range(i) if x[i] - x[j] < reach[j] and abs(value[j] - value[i]) < 0.05 * span}
        slots.append(min(set(range(len(taken) + 1)) - taken))
    return [4.0 + 9.0 * (slot // 2) if slot % 2 == 0 else -13.0 - 9.0 * (slot // 2) for slot in slots]


def matched_memory(frame: pd.DataFrame, colours: dict) -> Figure:
    """Score vs state as % of full attention's KV (log x) for one task, one panel per length; front as a step line.

    Points are labelled with their method, since the x positions (a share of one yardstick) group
    methods of similar state close together, where a colour legend alone is hard to match.
    """
    lengths = sorted(frame["length"].unique())
    fig, panels = _figure(len(lengths), width=4.2, height=3.6, columns=3, sharey=True)
    # one broken cell (a perplexity in the hundreds) would flatten every other point onto the axis
    log_y = bool((frame["value"] > 0).all() and frame["value"].max() > 10 * frame["value"].min())
    for ax, length in zip(panels, lengths, strict=True):
        if log_y:
            ax.set_yscale("log")
        cells = frame[frame["length"] == length].assign(percent=lambda f: 100.0 * f["fraction"])
        cells = cells.sort_values(["percent", "method"])
        axes.log_axis(ax, pd.concat([cells["percent"], pd.Series([100.0])]), "%", axis="x", max_ticks=5)
        low, high = ax.get_xlim()
        ax.set_xlim(low, high * (high / low) ** 0.12)  # room for the labels of the rightmost and topmost points
        ax.margins(y=0.12)
        heights = np.log10(cells["value"].to_numpy()) if log_y else cells["value"].to_numpy()  # as drawn
        rises = _label_offsets(cells["percent"].to_numpy(), heights, list(cells["method"]), ax.get_xlim())
        for (_, row), rise in zip(cells.iterrows(), rises, strict=True):
            _points(ax, [row["percent"]], [row["value"]], colours[row["method"]], [row["beyond_window"]], size=40)
            ax.annotate(row["method"], (row["percent"], row["value"]), xytext=(4, rise), textcoords="offset points",
                        fontsize="x-small", color=colours[row["method"]])  # fmt: skip
        front = cells[cells["pareto"]].sort_values("percent")
        ax.step(front["percent"], front["value"], where="post", color="black", linewidth=1, alpha=0.6)
        ax.axvline(100.0, color="0.6", linestyle=":", linewidth=1)  # full attention's own cache
        ax.set(title=f"length {axes.tokens(length)}", xlabel="state, % of full attention's KV")
    direction = "higher" if bool(frame["higher_is_better"].iloc[0]) else "lower"
    panels[0].set_ylabel(f"{frame['metric'].iloc[0]}\n({direction} is better)")
    handles = [Line2D([], [], color="black", alpha=0.6, label="Pareto front at that length"),
               Line2D([], [], color="0.6", linestyle=":", label="full attention's KV (100%)")]  # fmt: skip
    if frame["beyond_window"].any():
        handles.append(_beyond_handle())
    fig.legend(handles=handles, loc="outside lower center", ncols=_columns(handles, panels), fontsize="small")
    return fig


def figures(tables: dict[str, pd.DataFrame], baseline: str | None = None) -> dict[str, tuple[Figure, str]]:
    """Every figure the tables support: name -> (figure, caption)."""
    colours = palette(tables["summary"]["method"], baseline)
    out: dict[str, tuple[Figure, str]] = {}
    beyond = " Hollow markers: input longer than the base model's trained window."
    beyond = beyond if tables["summary"]["beyond_window"].any() else ""
    if "passkey_depth" in tables:
        dagger = "; † input longer than the base model's trained window" if beyond else ""
        caption = f"Passkey accuracy per needle depth and input length (red 0, green 1){dagger}."
        out["passkey_heatmap"] = (passkey_heatmaps(tables["passkey_depth"], colours), caption)
    passkey = tables["summary"][tables["summary"]["task"] == "passkey"]
    if passkey["value"].notna().any() and passkey["length"].nunique() > 1:  # a line needs two lengths
        caption = "Passkey accuracy vs input length; band: 95% bootstrap interval." + beyond
        out["passkey_length"] = (passkey_lengths(tables["summary"], colours), caption)
    perplexity = tables.get("perplexity", pd.DataFrame(columns=["perplexity", "length"]))
    if perplexity["perplexity"].notna().any() and perplexity["length"].nunique() > 1:
        caption = "Token-weighted perplexity vs input length; band: 95% document bootstrap." + beyond
        out["perplexity_length"] = (perplexity_lengths(tables["perplexity"], colours), caption)
    for task, frame in tables.get("babilong", pd.DataFrame(columns=["task", "length"])).groupby("task"):
        if frame["length"].nunique() < 2:  # a line needs two lengths; the table has the one
            continue
        caption = (f"{task}: accuracy (%) vs input length per bAbI task and their average (0: the facts alone); "
                   "dotted: the task's chance level (its most frequent answer's share).")  # fmt: skip
        out[f"babilong_length_{file_stem(task)}"] = (babilong_lengths(frame, colours), caption)
    if "position_nll" in tables:
        protocols = "; ".join(sorted(set(tables["perplexity"]["protocol"]))) if "perplexity" in tables else ""
        whole = " The legend names methods whose input runs past the base model's trained window." if beyond else ""
        caption = f"NLL per token by position (lower is better). Protocol: {protocols}." + whole
        out["position_nll"] = (position_curves(tables["position_nll"], colours, protocols), caption)
    if "cost" in tables:
        for task, frame in tables["cost"].groupby("task"):
            caption = (f"{task}: cost vs input tokens (log-log, median per length); lines: least-squares power-law "
                       "fit n^k through the medians, for methods measured at 3+ lengths." + beyond)  # fmt: skip
            if frame["length"].nunique() == 1:
                caption = f"{task}: median cost per sample of each method at {int(frame['length'].iloc[0]):,} tokens."
            fits = tables["scaling"][tables["scaling"]["task"] == task]
            out[f"cost_{file_stem(task)}"] = (cost_curves(frame, fits, colours), caption)
    for task, frame in tables.get("budget_curve", pd.DataFrame(columns=["task"])).groupby("task"):
        caption = (f"{task}: {frame['metric'].iloc[0]} vs steps trained, a line per training run (its checkpoints), "
                   "dashed: methods without a checkpoint (the controls).")  # fmt: skip
        out[f"budget_{file_stem(task)}"] = (budget_curves(frame, colours), caption)
    roofline = tables.get("roofline", pd.DataFrame(columns=["task", "length"]))
    shown = roofline.groupby("task")["length"].transform("nunique") > 1 if len(roofline) else []
    if len(roofline) and shown.any():  # a line needs two lengths; the tables have the rest
        caption = (f"Prefill's achieved FLOP rate as % of the run's measured matmul peak vs input length; dotted: "
                   f"{LOW_SHARE:g} %.")  # fmt: skip
        out["roofline_lengths"] = (roofline_lengths(roofline[shown], colours), caption)
    for task, frame in tables.get("tradeoff", pd.DataFrame(columns=["task"])).groupby("task"):
        for cost, (column, _, _, label) in TRADEOFF_COSTS.items():
            if frame[column].isna().all():  # a cost the task never incurs (autoencode reads no prompt)
                continue
            caption = (f"{task}: score vs median {label} per cell, one panel per input length; ringed and joined: "
                       "the Pareto front within that length." + beyond)  # fmt: skip
            out[f"tradeoff_{file_stem(task)}_{cost}"] = (tradeoff(frame, colours, cost), caption)
    memory = tables.get("memory", pd.DataFrame(columns=["task", "method", "fraction"]))
    for task, frame in memory[memory["fraction"] > 0].groupby("task"):
        caption = (f"{task}: score vs state after a sample as % of full attention's KV cache at the same length "
                   "(log x), one panel per input length; black step: the Pareto front within that length."
                   + beyond)  # fmt: skip
        stateless = sorted(set(memory.loc[(memory["task"] == task) & (memory["fraction"] == 0), "method"]))
        if stateless:  # no place on a log axis; the table lists them
            caption += f" Not drawn, holding no state after a sample: {', '.join(stateless)}."
        out[f"memory_{file_stem(task)}"] = (matched_memory(frame, colours), caption)
    return out

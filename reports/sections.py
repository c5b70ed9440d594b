"""The report as a list of sections of display blocks (text, tables of strings, figures, code), in report order."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.budget_curve import budget_section
from reports.cost import METRICS, MIN_FIT_LENGTHS, medians
from reports.memory_gain import KEY_GAIN
from reports.roofline import roofline_section
from reports.shared_context import shared_context_section
from reports.tables import MIN_INTERVAL_SAMPLES
from reports.tasks import file_stem, longbench_order
from reports.text import DAGGER, STATUS_TEXT, Block, Section, count, fmt, human, mark, score_text

EXAMPLES_PER_TASK = 2
PREDICTION_CHARS = 160


def summary_section(summary: pd.DataFrame) -> Section:
    """Section 1: methods x lengths per task, with failures listed with their error."""
    section = Section("Summary")
    section.text(
        "Headline metric per cell: point value from the cell's aggregate, 95% percentile bootstrap interval over "
        f'samples (none under {MIN_INTERVAL_SAMPLES} samples; "no spread" when every resample gives one value), '
        "sample count. OOM / failed / over-length cells are shown as such."
    )
    for task, group in summary.groupby("task"):
        direction = "higher" if group["higher_is_better"].iloc[0] else "lower"
        grid = group.assign(text=group.apply(score_text, axis=1)).pivot(index="method", columns="length", values="text")
        grid = grid.reindex(columns=sorted(grid.columns)).fillna("not run").reset_index()
        grid.columns = ["method", *[str(c) for c in grid.columns[1:]]]
        section.table(grid, f"{task}: {group['metric'].iloc[0]} ({direction} is better) by input length (tokens)")
    shown = summary["value"].notna()
    section.footnote(summary["beyond_window"] & shown, summary["noncausal"] & shown, summary["beyond_memory"] & shown)
    failed = summary[summary["status"].isin(list(STATUS_TEXT))]
    if len(failed):
        errors = failed.assign(
            status=failed["status"].map(STATUS_TEXT),
            error=failed["error"].fillna("").map(lambda e: e.splitlines()[0][:200] if e else ""),
        )[["task", "method", "length", "status", "error"]]
        section.table(errors, "Cells that did not finish")
    return section


def passkey_section(tables: dict, figures: dict) -> Section:
    """Section 2: heatmap, accuracy vs length, depth table."""
    section = Section("Passkey retrieval")
    for name in ("passkey_heatmap", "passkey_length"):
        if name in figures:
            section.figure(name, figures[name])
    depth = tables["passkey_depth"]
    depth = depth.assign(text=[f"{mark(fmt(a), b)} ({n})" for a, b, n in
                               zip(depth["accuracy"], depth["beyond_window"], depth["n"], strict=True)])  # fmt: skip
    grid = depth.pivot(index=["method", "depth"], columns="length", values="text").fillna("–").reset_index()
    grid.columns = [str(c) for c in grid.columns]
    section.table(grid, "Accuracy (samples) per method and needle depth, by input length")
    section.footnote(depth["beyond_window"])
    return section


def perplexity_section(tables: dict, figures: dict) -> Section:
    """Section 3: perplexity table with protocol, perplexity vs length, per-position NLL."""
    section = Section("Perplexity")
    frame = tables["perplexity"]
    shown = pd.DataFrame(
        {
            "method": frame["method"], "length": frame["length"],
            "perplexity": [_perplexity_text(row) for _, row in frame.iterrows()],
            "per-document mean": frame["mean_document_perplexity"].map(fmt),
            "tokens": frame["tokens"].map(count), "documents": frame["documents"].map(count),
            "skipped docs": frame["skipped_documents"].map(count), "protocol": frame["protocol"],
        }
    )  # fmt: skip
    section.table(
        shown,
        "Token-weighted perplexity exp(sum NLL / tokens) (lower is better), 95% document bootstrap; beside it the "
        "mean of the documents' perplexities, as the papers report it",
    )
    section.footnote(
        frame["beyond_window"].fillna(False), frame["noncausal"].fillna(False), frame["beyond_memory"].fillna(False)
    )
    for name in ("perplexity_length", "position_nll"):
        if name in figures:
            section.figure(name, figures[name])
    return section


def _perplexity_text(row) -> str:
    """`31.6† [30.1, 33.0]` with its marks and interval, or the failure status."""
    flags = [
        False if pd.isna(row.get(k)) else bool(row.get(k)) for k in ("beyond_window", "noncausal", "beyond_memory")
    ]
    value = mark(fmt(row["perplexity"]), *flags)
    if isinstance(row["ci_low"], float) and math.isfinite(row["ci_low"]):
        return f"{value} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return STATUS_TEXT.get(row["status"]) or value


def longbench_section(tables: dict) -> Section:
    """Section 4: per-dataset scores, category averages, EN/ZH averages, 16-EN mean, truncated/skipped counts."""
    section = Section("LongBench")
    beyond = _beyond(tables["summary"])
    frame = tables["longbench"].assign(column=lambda f: [
        mark(f"{m} @{n}", beyond.get(("longbench", m, n), False)) for m, n in zip(f["method"], f["length"], strict=True)
    ])  # fmt: skip
    grid = frame.pivot_table(index="key", columns="column", values="value", aggfunc="first")
    grid = grid.reindex(longbench_order(frame))
    counts = grid.index.isin(frame.loc[frame["kind"] == "count", "key"])
    grid = grid.astype(object)
    grid[counts] = grid[counts].map(count)
    grid[~counts] = grid[~counts].map(fmt)
    grid.insert(0, "category", [frame.loc[frame["key"] == k, "category"].iloc[0] for k in grid.index])
    section.text(
        "avg_en / avg_zh: official averages (mean of category means); avg_en16: mean over the 16 English datasets "
        "used by method papers; average: the headline. Skipped samples are excluded from means."
    )
    section.table(grid.reset_index().rename(columns={"key": "dataset / average"}), "Scores per method @ length")
    section.footnote(DAGGER in c for c in grid.columns)
    return section


def babilong_section(tables: dict, figures: dict) -> Section:
    """BABILong: accuracy (%) per method and bAbI task by length, their average, each task's chance level."""
    section = Section("BABILong")
    section.text("avg: the mean over the tasks of each task's accuracy (BABILong's leaderboard average); length 0 is "
                 "the facts alone, without background text.")  # fmt: skip
    for task, frame in tables["babilong"].groupby("task"):
        prompts = frame.groupby("prompt")["method"].unique()
        if len(prompts) > 1:  # each kind of model with its own prompt, as BABILong's leaderboard runs them
            section.text(f"{task}: " + "; ".join(f"{prompt} prompt: {', '.join(sorted(methods))}"
                                                 for prompt, methods in prompts.items()) + ".")  # fmt: skip
        tasks = sorted(set(frame["babi_task"]) - {"avg"})
        order = [*tasks, "avg"] if len(tasks) > 1 else tasks
        frame = frame[frame["babi_task"].isin(order)]
        text = frame.assign(text=[f"{fmt(a)} ({n})" for a, n in zip(frame["accuracy"], frame["n"], strict=True)])
        grid = text.pivot_table(index=["method", "babi_task"], columns="length", values="text", aggfunc="first")
        grid = grid.reindex(pd.MultiIndex.from_product([grid.index.unique(0), order])).dropna(how="all")
        chance = frame.pivot_table(index="babi_task", columns="length", values="chance", aggfunc="first")
        chance = chance.reindex(order).map(fmt)
        chance.index = pd.MultiIndex.from_product([["chance (best constant answer)"], chance.index])
        grid = pd.concat([grid, chance]).fillna("–").reset_index()
        grid.columns = ["method", "bAbI task", *(str(c) for c in grid.columns[2:])]
        section.table(grid, f"{task}: accuracy % (samples) per method and bAbI task, by input length")
        name = f"babilong_length_{file_stem(task)}"
        if name in figures:
            section.figure(name, figures[name])
    return section


def ruler_section(tables: dict) -> Section:
    """RULER: each method's average over the RULER tasks it ran, by length, and its effective length."""
    section = Section("RULER")
    frame = tables["ruler"]
    text = frame.assign(text=[f"{fmt(a)} ({n})" for a, n in zip(frame["average"], frame["tasks"], strict=True)])
    grid = text.pivot(index="method", columns="length", values="text").fillna("–").reset_index()
    grid.columns = [str(c) for c in grid.columns]
    section.table(grid, "RULER average % (tasks averaged) per method, by input length")
    effective = tables["ruler_effective"]
    threshold = fmt(effective["threshold"].iloc[0])
    shown = pd.DataFrame(
        {
            "method": effective["method"],
            f"effective length (average > {threshold})": effective["effective"].map(_length_text),
            "longest length at ≥ half its shortest-length average": effective["half_of_shortest"].map(_length_text),
            "shortest-length average": effective["shortest_average"].map(fmt),
        }
    )
    section.text(
        f"Effective length: the longest input length up to which the method's RULER average stays above {threshold}, "
        "the RULER paper's threshold (Llama-2-7B's average at 4K); a small model may never reach it, so beside it the "
        "longest length up to which the average stays at or above half its own average at the shortest length. "
        "Averages over different task sets (the count in brackets) do not compare."
    )
    section.table(shown, "Effective length per method")
    return section


def _length_text(length) -> str:
    return "none" if length is None or pd.isna(length) else f"{int(length):,}"


def cost_section(tables: dict, figures: dict) -> Section:
    """Section 5: median costs per task x method x length, fitted exponents, one log-log figure per task."""
    section = Section("Cost")
    cost = tables["cost"]
    metrics = [m for m in METRICS if cost[m].notna().any()]
    median = medians(cost)
    shown = median[["task", "method"]].copy()
    shown["length"] = [mark(str(n), b, loaded=loaded) for n, b, loaded in
                       zip(median["length"], median["beyond_window"], median["under_load"], strict=True)]  # fmt: skip
    shown["input tokens"] = median["input_tokens"].map(fmt)
    for metric in metrics:
        label, unit = METRICS[metric]
        shown[label] = median[metric].map(lambda v, unit=unit: human(v, unit))
    section.table(shown, "Median cost per sample")
    section.footnote(median["beyond_window"], loaded=median["under_load"])
    if "scaling" in tables and np.isfinite(tables["scaling"]["exponent"]).any():
        fits = tables["scaling"].assign(text=lambda f: [
            f"{fmt(k)} (r²={fmt(r2)}, {n} lengths)" if math.isfinite(k) else f"n/a ({n} length{'s' * (n != 1)})"
            for k, r2, n in zip(f["exponent"], f["r2"], f["lengths"], strict=True)
        ])  # fmt: skip
        grid = fits.pivot(index=["task", "method"], columns="metric", values="text").fillna("–")
        grid = grid[[m for m in METRICS if m in grid.columns]].rename(columns=lambda m: METRICS[m][0]).reset_index()
        section.text(f"Scaling exponent k of cost ∝ (input tokens)^k per task: least squares in log-log over the "
                     f"per-length medians, fitted only with {MIN_FIT_LENGTHS}+ lengths. Linear methods sit near 1, "
                     "full-attention prefill approaches 2 as attention dominates.")  # fmt: skip
        section.table(grid, "Fitted scaling exponents")
    elif "scaling" in tables:
        most = int(tables["scaling"]["lengths"].max())
        section.text(f"Scaling exponents need {MIN_FIT_LENGTHS}+ lengths per method; this store has at most {most}.")
    for name in sorted(n for n in figures if n.startswith("cost_")):
        section.figure(name, figures[name])
    return section


def tradeoff_section(tables: dict, figures: dict) -> Section:
    """Section 6: score vs cost per task, one panel per length; Pareto cells (within their length) listed."""
    section = Section("Accuracy vs cost")
    frame = tables["tradeoff"]
    section.text("Peak memory: the most memory a sample took above what was held when it started (activations, "
                 "caches, a memory encoder's work; the weights not counted); *Matched memory* counts only the state "
                 "kept between segments.")  # fmt: skip
    for name in sorted(n for n in figures if n.startswith("tradeoff_")):
        section.figure(name, figures[name])
    shown = pd.DataFrame(
        {
            "task": frame["task"], "method": frame["method"], "length": frame["length"], "metric": frame["metric"],
            "value": [mark(fmt(v), b) for v, b in zip(frame["value"], frame["beyond_window"], strict=True)],
            "peak memory": frame["peak_mem_bytes"].map(lambda v: human(v, "bytes")),
            "prefill": frame["prefill_s"].map(lambda v: human(v, "s")), "Pareto (memory)": frame["pareto_mem"].map(fmt),
            "Pareto (prefill)": frame["pareto_prefill"].map(fmt),
        }
    ).sort_values(["task", "length", "method"])  # fmt: skip
    section.table(shown, "Per cell: headline vs median peak memory and prefill time; Pareto-optimal within its "
                         "task and length marked")  # fmt: skip
    section.footnote(frame["beyond_window"])
    return section


def memory_section(tables: dict, figures: dict) -> Section:
    """Section 7: score vs state as a share of full attention's KV at the same length, Pareto front per length."""
    section = Section("Matched memory")
    if "memory" not in tables:
        section.text("No matched-memory view: no scored sample in this store recorded its state bytes.")
        return section
    frame = tables["memory"]
    section.text(
        "State: median bytes a method holds on the device after a sample (KV cache, memories; blocks offloaded to "
        "host memory, as InfLLM's, not counted), as a percentage of full attention's KV cache at the same model and "
        "length: measured from this store's `full` samples at that task, model and length, else computed as "
        "2 × layers × KV heads × head dim × length × bytes per element from the model's config. Pareto: no other "
        "method at that task and length holds no more state with a score at least as good, one of the two strictly; "
        "scores at or below the task's chance level are never on it. This is the memory a method carries from one "
        "segment to the next; the peak memory of *Accuracy vs cost* is the most memory a sample took above what was "
        "held when it started (activations, caches, a memory encoder's work), so a method can be small here and "
        "large there."
    )
    for name in sorted(n for n in figures if n.startswith("memory_")):
        section.figure(name, figures[name])
    known = frame[frame["full_kv_bytes"].notna()]
    for (task, length), group in known.groupby(["task", "length"]):
        direction = "higher" if group["higher_is_better"].iloc[0] else "lower"
        shown = pd.DataFrame(
            {
                "method": group["method"],
                f"{group['metric'].iloc[0]} ({direction} is better)": [
                    mark(fmt(v), b) for v, b in zip(group["value"], group["beyond_window"], strict=True)
                ],
                "state": group["state_bytes"].map(lambda v: human(v, "bytes")),
                "% of full KV": group["fraction"].map(lambda f: f"{fmt(100.0 * f)}%"),
                "Pareto": group["pareto"].map(fmt),
            }
        )  # fmt: skip
        references = group.drop_duplicates(["full_kv_bytes", "reference"])
        full = ", ".join(f"{human(b, 'bytes')} ({r})" for b, r in
                         zip(references["full_kv_bytes"], references["reference"], strict=True))  # fmt: skip
        section.table(shown, f"{task} at {length:,} tokens; full attention's KV: {full}")
    section.footnote(known["beyond_window"])
    missing = frame[frame["full_kv_bytes"].isna()].drop_duplicates(["task", "length", "model"])
    if len(missing):
        where = ", ".join(f"{t} at {n:,} tokens ({m})" for t, n, m in
                          zip(missing["task"], missing["length"], missing["model"], strict=True))  # fmt: skip
        section.text(f"No full-attention reference for {where}: no `full` samples at that task, model and length, "
                     "and the model's config.json (layers, KV heads, head dim) is not on this machine.")  # fmt: skip
    return section


def memory_gain_section(tables: dict) -> Section:
    """Section 8: per-token log-prob gain of each memory method over its no-memory control, by position."""
    section = Section("Where memory helps, per token")
    frame = tables.get("memory_gain", pd.DataFrame(columns=["method", "control", "length"]))
    section.text(
        f"Gain of a token = its NLL under the method's control (named by `control:` in the sweep: the same local "
        f"context without the memory) minus its NLL under the method, in nats, on the perplexity documents both "
        f"scored; above 0 the memory helped. Per position bucket: the mean gain and the shares of tokens helped or "
        f"hurt by more than {KEY_GAIN:g} nats (LongPPL's threshold for a token that needs long context, arXiv "
        f"2410.23771); the first bucket starts at the document's second token."
    )
    for (method, control, length), group in frame.groupby(["method", "control", "length"], sort=True):
        shown = pd.DataFrame(
            {
                "position": group["position"].map(count), "documents": group["documents"].map(count),
                "tokens": group["tokens"].map(count), "mean gain (nats)": group["mean_gain"].map(fmt),
                f"helped > {KEY_GAIN:g}": group["helped"].map(lambda v: f"{fmt(100.0 * v)}%"),
                f"hurt > {KEY_GAIN:g}": group["hurt"].map(lambda v: f"{fmt(100.0 * v)}%"),
            }
        )  # fmt: skip
        section.table(shown, f"{method} over {control}, documents of {length:,} tokens")
    if "memory_gain_unpaired" in tables:
        missing = tables["memory_gain_unpaired"]
        named = "; ".join(f"{m} over {c} at {n:,} tokens" for m, c, n in
                          zip(missing["method"], missing["control"], missing["length"], strict=True))  # fmt: skip
        section.text(f"Not compared, the control having no perplexity cell at that length: {named}.")
    return section


def paired_section(tables: dict, baseline: str) -> Section:
    """Section 9: method minus baseline on the same instances."""
    section = Section(f"Paired comparison against {baseline}")
    if "paired" not in tables:
        labels = ", ".join(sorted(tables["summary"]["method"].unique()))
        section.text(f"No paired comparison: no sample of baseline '{baseline}' shares an instance with another "
                     f"method (methods in the store: {labels}; choose one with --baseline).")  # fmt: skip
        return section
    frame = tables["paired"]
    beyond = _beyond(tables["summary"])
    # A difference is marked when either side ran past its trained window.
    flags = [beyond.get((t, m, n), False) or beyond.get((t, baseline, n), False)
             for t, m, n in zip(frame["task"], frame["method"], frame["length"], strict=True)]  # fmt: skip
    shown = pd.DataFrame(
        {
            "task": frame["task"], "length": frame["length"], "method": frame["method"], "pairs": frame["pairs"],
            "mean diff [95% CI]": [f"{mark(fmt(m), b)} [{fmt(lo)}, {fmt(hi)}]" for m, lo, hi, b in
                                   zip(frame["mean_diff"], frame["ci_low"], frame["ci_high"], flags, strict=True)],
            "p (sign flip)": frame["p_value"].map(lambda p: fmt(p, 2)),
            "direction": frame["higher_is_better"].map(lambda h: "higher is better" if h else "lower is better"),
        }
    )  # fmt: skip
    section.text(f"Difference = method − {baseline} of the per-sample score on the same instance (joined on task, "
                 "length, instance id; skipped samples excluded); paired bootstrap 95% interval and two-sided "
                 "sign-flip permutation p-value (exact for ≤14 pairs), seeded.")  # fmt: skip
    section.table(shown)
    section.footnote(flags)
    return section


def _beyond(summary: pd.DataFrame) -> dict:
    """(task, method, length) -> whether that cell ran past the base model's trained window."""
    keys = zip(summary["task"], summary["method"], summary["length"], strict=True)
    return dict(zip(keys, summary["beyond_window"], strict=True))


def examples_section(samples: pd.DataFrame) -> Section:
    """Show a few predictions per task and method (the first instances at the longest length)."""
    section = Section("Example predictions")
    rows = []
    for task, group in samples[samples["prediction"].notna()].groupby("task"):
        longest = group[group["length"] == group["length"].max()]
        ids = sorted(longest["instance_id"].dropna().unique())[:EXAMPLES_PER_TASK]
        for _, row in longest[longest["instance_id"].isin(ids)].sort_values(["instance_id", "method"]).iterrows():
            rows.append({"task": task, "instance": row["instance_id"], "method": row["method"],
                         "target": _clip(row["target"]), "prediction": _clip(row["prediction"]),
                         "score": fmt(row["score"])})  # fmt: skip
    if rows:
        section.table(pd.DataFrame(rows))
    return section


def _clip(text) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= PREDICTION_CHARS else text[:PREDICTION_CHARS] + "…"


def provenance_section(tables: dict) -> Section:
    """Section 10: runs, packages, method configs with their documented deviations, task configs."""
    section = Section("Provenance")
    section.table(tables["runs"].fillna("–"), "Runs (dates UTC, command, lch commit, device, load averages at start)")
    models = tables["methods"][["method", "model", "dtype"]]
    section.table(models, "Base model per method")
    if len(tables.get("training", ())):
        section.table(tables["training"].fillna("–"),
                      "Training budget per trained method (its checkpoint: what the weights saw, tokens summed "
                      "over every step's documents)")  # fmt: skip
    packages = tables["packages"]
    if len(packages):
        note = f" ({packages.attrs['note']})" if "note" in packages.attrs else ""
        section.table(packages, "Package versions" + note)
    for _, row in tables["methods"].iterrows():
        section.text(f"Method {row['method']} (registered as '{row['name']}'), config:")
        section.blocks.append(Block("code", text=row["config"]))
        if row["docstring"]:
            section.blocks.append(Block("code", text=row["docstring"]))
        if row["sources"]:
            section.text(f"Sources: {row['sources']}")
    section.table(tables["tasks"].assign(higher_is_better=tables["tasks"]["higher_is_better"].map(fmt)),
                  "Task configs (protocols and policies)")  # fmt: skip
    return section


def sections(tables: dict[str, pd.DataFrame], figures: dict[str, str], baseline: str) -> list[Section]:
    """All sections the store has data for, in report order; `figures` maps figure name -> caption."""
    out = [summary_section(tables["summary"])]
    if "passkey_depth" in tables:
        out.append(passkey_section(tables, figures))
    if "perplexity" in tables:
        out.append(perplexity_section(tables, figures))
    if "longbench" in tables:
        out.append(longbench_section(tables))
    if "babilong" in tables:
        out.append(babilong_section(tables, figures))
    if "ruler" in tables:
        out.append(ruler_section(tables))
    if "shared_context" in tables:
        out.append(shared_context_section(tables["shared_context"]))
    if "budget_curve" in tables:
        section = budget_section(tables["budget_curve"])
        for name in sorted(name for name in figures if name.startswith("budget_")):
            section.figure(name, figures[name])
        out.append(section)
    if "cost" in tables:
        out.append(cost_section(tables, figures))
    if "roofline" in tables:
        section = roofline_section(tables["roofline"])
        for name in sorted(name for name in figures if name.startswith("roofline_")):
            section.figure(name, figures[name])
        out.append(section)
    if "tradeoff" in tables:
        out.append(tradeoff_section(tables, figures))
    out.append(memory_section(tables, figures))
    if "memory_gain" in tables or "memory_gain_unpaired" in tables:
        out.append(memory_gain_section(tables))
    if tables["summary"]["method"].nunique() > 1:
        out.append(paired_section(tables, baseline))
    examples = examples_section(tables["samples"])
    if examples.blocks:
        out.append(examples)
    out.append(provenance_section(tables))
    return out

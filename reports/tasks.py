"""Task-specific report tables: passkey depth grid, perplexity with its protocol, LongBench averages, BABILong, RULER.

Each reads the per-sample fields its task writes (the contracts are in the task modules and the
reports issue) and returns an empty frame when the store has no cell of that task.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from tasks import token_nll

# RULER's 13 tasks as lm-eval names them (lm_eval/tasks/ruler/ruler.yaml), and the RULER paper's threshold for an
# effective length: Llama-2-7B's average at 4K (Hsieh et al., 2024, arXiv 2404.06654, Table 3).
RULER_TASKS = (
    "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
    "niah_multiquery", "niah_multivalue", "ruler_vt", "ruler_cwe", "ruler_fwe", "ruler_qa_squad", "ruler_qa_hotpot",
)  # fmt: skip
RULER_THRESHOLD = 85.6

# LongBench aggregate keys that are not dataset names, in the order the table shows them.
LONGBENCH_AVERAGES = ("avg_en", "avg_zh", "avg_en16", "average")
LONGBENCH_COUNTS = ("truncated", "skipped")


def passkey_depth(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean passkey accuracy, sample count and `beyond_window` (any sample) per method x length x needle depth."""
    rows = samples[(samples["task"] == "passkey") & samples["score"].notna() & ~samples["skipped"]]
    rows = rows.assign(depth=rows["metadata"].map(lambda m: m.get("depth"))).dropna(subset=["depth"])
    if rows.empty:
        return pd.DataFrame(columns=["method", "length", "depth", "accuracy", "n", "beyond_window"])
    grouped = rows.groupby(["method", "length", "depth"])
    frame = grouped["score"].agg(accuracy="mean", n="count")
    frame["beyond_window"] = grouped["beyond_window"].any()
    return frame.reset_index()


def protocol_text(config: dict) -> str:
    """`protocol=sliding, window=4096, stride=2048` from a perplexity task config (the keys it has)."""
    keys = [k for k in ("protocol", "window", "stride") if config.get(k) is not None]
    return ", ".join(f"{k}={config[k]}" for k in keys) or json.dumps(config, sort_keys=True)


def perplexity(cells: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per perplexity cell: token-weighted perplexity with its interval, the per-document mean, counts, protocol.

    The per-document mean (of each document's own perplexity) is what the papers report.
    """
    mine = cells[cells["task"] == "perplexity"]
    if mine.empty:
        return pd.DataFrame()
    rows = []
    for _, cell in mine.iterrows():
        aggregate = cell["aggregate"]
        rows.append(
            {
                "method": cell["label"], "length": int(cell["length"]), "status": cell["status"],
                "perplexity": aggregate.get("perplexity", np.nan),
                "mean_document_perplexity": aggregate.get("mean_document_perplexity", np.nan),
                "tokens": aggregate.get("tokens", np.nan),
                "documents": aggregate.get("documents", np.nan),
                "skipped_documents": aggregate.get("skipped_documents", np.nan),
                "protocol": protocol_text(cell["task_config"]),
            }
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    interval = summary[summary["task"] == "perplexity"][
        ["method", "length", "ci_low", "ci_high", "n", "beyond_window", "noncausal", "beyond_memory"]
    ]
    frame = frame.merge(interval, on=["method", "length"], how="left")
    return frame.sort_values(["method", "length"], ignore_index=True)


def position_nll(samples: pd.DataFrame) -> pd.DataFrame:
    """NLL per token in each position bucket, summed over the documents of a method x length.

    Rows: method, length, bucket (index), position (first token of the bucket), nll_sum, tokens,
    nll (= nll_sum / tokens), perplexity (= exp(nll)) and beyond_window (any document of the cell).
    """
    mine = samples[(samples["task"] == "perplexity") & ~samples["skipped"]]
    rows = []
    for _, sample in mine.iterrows():
        curve = _curve(sample["metadata"], int(sample["length"]))
        if not curve:
            continue
        for index, (nll, tokens) in enumerate(zip(curve["nll_sum"], curve["tokens"], strict=False)):
            rows.append(
                {"method": sample["method"], "length": int(sample["length"]), "bucket": index,
                 "position": index * int(curve["bucket"]), "nll_sum": float(nll), "tokens": int(tokens),
                 "beyond_window": bool(sample["beyond_window"])}
            )  # fmt: skip
    if not rows:
        return pd.DataFrame()
    keys = ["method", "length", "bucket", "position"]
    frame = (
        pd.DataFrame(rows)
        .groupby(keys, as_index=False)
        .agg(nll_sum=("nll_sum", "sum"), tokens=("tokens", "sum"), beyond_window=("beyond_window", "any"))
    )
    frame = frame[frame["tokens"] > 0]
    frame["nll"] = frame["nll_sum"] / frame["tokens"]
    frame["perplexity"] = np.exp(frame["nll"])
    return frame.reset_index(drop=True)


def bucket_width(length: int) -> int:
    """The power of two that cuts a `length`-token document into 8 to 16 position buckets."""
    return 2 ** max(int(np.log2(max(length, 8) / 8)), 0)


def _curve(metadata: dict, length: int) -> dict | None:
    """A sample's NLL by position bucket, 8 to 16 buckets to its length when it stored its per-token NLLs.

    Bucket `b` holds positions `b * width .. (b + 1) * width - 1` (token `i` of the stored NLLs is position
    `i + 1`), as the task's own `position_nll` curve, whose fixed width (4096 by default) is the fallback.
    """
    if "token_nll" not in metadata:
        return metadata.get("position_nll")
    nll = token_nll.decode(metadata["token_nll"])
    width = bucket_width(length)
    index = np.arange(1, nll.size + 1) // width
    return {"bucket": width, "nll_sum": np.bincount(index, weights=nll).tolist(), "tokens": np.bincount(index).tolist()}


def longbench(cells: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Long table of LongBench numbers per method x length: `key`, `kind`, `value`.

    `kind` is `dataset`, `category`, `average`, `length bucket` (LongBench-E `e/...` keys) or `count`
    (truncated / skipped samples). Values come
    from the cell aggregate; datasets missing there (an unfinished cell) are averaged from the
    samples, skipped samples excluded.
    """
    mine = cells[cells["task"] == "longbench"]
    if mine.empty:
        return pd.DataFrame()
    rows = []
    for _, cell in mine.iterrows():
        aggregate = dict(cell["aggregate"])
        own = samples[samples["cell_id"] == cell["cell_id"]]
        meta = own["metadata"]
        datasets = meta.map(lambda m: m.get("dataset"))
        categories = dict(zip(datasets, meta.map(lambda m: m.get("category")), strict=False))
        used = own[~own["skipped"] & own["score"].notna()]
        for dataset, mean in used.groupby(datasets[used.index])["score"].mean().items():
            aggregate.setdefault(dataset, mean)
        aggregate.setdefault("truncated", float(meta.map(lambda m: bool(m.get("truncated"))).sum()))
        aggregate.setdefault("skipped", float(own["skipped"].sum()))
        for key, value in aggregate.items():
            if key.startswith("category/"):
                kind, category = "category", key.split("/", 1)[1]
            elif key in LONGBENCH_AVERAGES:
                kind, category = "average", ""
            elif key in LONGBENCH_COUNTS:
                kind, category = "count", ""
            elif key.startswith("e/"):  # LongBench-E length buckets: e/<bucket> and e/<bucket>/<dataset>
                kind, category = "length bucket", ""
            else:
                kind, category = "dataset", categories.get(key) or ""
            rows.append(
                {"method": cell["label"], "length": int(cell["length"]), "key": key, "kind": kind,
                 "category": category, "value": value}
            )  # fmt: skip
    return pd.DataFrame(rows)


def longbench_order(frame: pd.DataFrame) -> list[str]:
    """Row order for the LongBench table: datasets by category, categories, averages, LongBench-E buckets, counts."""
    datasets = frame[frame["kind"] == "dataset"].sort_values(["category", "key"])["key"].unique().tolist()
    categories = sorted(frame.loc[frame["kind"] == "category", "key"].unique())
    buckets = sorted(frame.loc[frame["kind"] == "length bucket", "key"].unique())
    present = set(frame["key"])
    averages = [k for k in LONGBENCH_AVERAGES if k in present]
    counts = [k for k in LONGBENCH_COUNTS if k in present]
    return [*datasets, *categories, *averages, *buckets, *counts]


def babilong(cells: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """BABILong accuracy (%) per task as reported x method x length x bAbI task, with `avg`, chance, count, prompt.

    `task` is the report's name of the cell's task (`babilong`, or `babilong:qa1` for a subset of the five),
    so cells run on different sets of bAbI tasks stay apart.

    Values come from the cell aggregate (`qaN`, `chance_qaN`, `accuracy`); a task missing there (an
    unfinished cell) is averaged from its samples, and the average from those.
    """
    mine = cells[cells["task"].str.startswith("babilong")]
    rows = []
    for _, cell in mine.iterrows():
        aggregate = dict(cell["aggregate"])
        own = samples[(samples["cell_id"] == cell["cell_id"]) & samples["score"].notna()]
        names = own["metadata"].map(lambda m: m.get("task"))
        counts = names.value_counts()
        for name, mean in own.groupby(names)["score"].mean().items():
            aggregate.setdefault(name, mean)
        tasks = sorted(key for key in aggregate if key.startswith("qa"))
        aggregate.setdefault("accuracy", float(np.mean([aggregate[name] for name in tasks])) if tasks else np.nan)
        for name in [*tasks, "avg"]:
            value = aggregate.get("accuracy") if name == "avg" else aggregate[name]
            chance = aggregate.get("chance" if name == "avg" else f"chance_{name}", np.nan)
            rows.append(
                {"task": cell["task"], "method": cell["label"], "length": int(cell["length"]), "babi_task": name,
                 "accuracy": value, "prompt": cell["task_config"].get("prompt", "instructed"),
                 "chance": chance, "n": int(counts.sum() if name == "avg" else counts.get(name, 0))}
            )  # fmt: skip
    return pd.DataFrame(rows)


def ruler(summary: pd.DataFrame) -> pd.DataFrame:
    """RULER's average (%) per method x length over the RULER tasks run as one lm-eval task each, and its count.

    A cell counts when it ran exactly one of `RULER_TASKS` (report name `lm-eval:<task>`); its value (0-1,
    RULER's string match) is scaled to %.
    """
    names = summary["task"].str.removeprefix("lm-eval:")
    mine = summary[summary["task"].str.startswith("lm-eval:") & names.isin(RULER_TASKS) & summary["value"].notna()]
    if mine.empty:
        return pd.DataFrame()
    grouped = mine.groupby(["method", "length"])["value"]
    frame = pd.DataFrame({"average": 100 * grouped.mean(), "tasks": grouped.count()}).reset_index()
    return frame.sort_values(["method", "length"], ignore_index=True)


def effective_lengths(frame: pd.DataFrame, threshold: float = RULER_THRESHOLD) -> pd.DataFrame:
    """Per method: RULER's effective length and the longest length at half its own shortest-length average.

    The effective length is the longest length up to which the average stays above `threshold`; the other,
    the longest up to which it stays at or above half the average at the method's shortest length. Both need
    every shorter measured length to pass too; missing where the shortest already fails, and the second
    where the shortest scores 0 (every length would keep half of nothing).
    """
    rows = []
    for method, group in frame.groupby("method"):
        group = group.sort_values("length")
        half = group["average"].iloc[0] / 2
        rows.append(
            {"method": method, "threshold": threshold, "effective": _longest(group, group["average"] > threshold),
             "half_of_shortest": _longest(group, (group["average"] >= half) & (half > 0)), "shortest_average": 2 * half}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _longest(group: pd.DataFrame, passing: pd.Series) -> int | None:
    """The last length of the leading run of passing lengths, or None when the first fails."""
    run = passing.cummin()
    return int(group.loc[run, "length"].iloc[-1]) if run.any() else None


def file_stem(task: str) -> str:
    """A task's report name as a safe file stem (`lm-eval:a+b` -> `lm-eval_a_b`): it names a PNG and an HTML src."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)

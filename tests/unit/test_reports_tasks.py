"""Perplexity and LongBench report sections from rows written with `Store` following the tasks' contracts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.store import Store
from reports import build
from reports.render import write_report

PROVENANCE = {"git_commit": "abc123", "packages": {"torch": "2.13"}, "device": "cpu: test"}


def _cell(store: Store, cell_id: str, label: str, task: str, headline: str, length: int, task_config: dict) -> None:
    store.open_cell(
        cell_id, "run1",
        {"label": label, "model": "tiny-random-llama", "dtype": "float32", "device": "cpu", "method": label,
         "method_config": {}, "task": task, "task_version": 1, "task_config": task_config, "headline": headline,
         "length": length, "seed": 0},
    )  # fmt: skip


def _cost(tokens: int, method: str) -> dict:
    # full: quadratic prefill; streaming: linear; no decode for perplexity.
    prefill = 1e-7 * tokens**2 if method == "full" else 1e-4 * tokens
    return {"input_tokens": tokens, "prefill_s": prefill, "decode_s": 0.0, "decode_tokens": 0,
            "peak_mem_bytes": 1000 * tokens, "state_bytes": 64 * tokens if method == "full" else 64 * 512}  # fmt: skip


@pytest.fixture
def perplexity_store(tmp_path):
    path = tmp_path / "ppl.sqlite"
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    config = {"protocol": "sliding", "window": 1024, "stride": 512, "dataset": "pg19"}
    rng = np.random.default_rng(0)
    truth = {}
    for method in ("full", "streaming"):
        for length in (1024, 2048, 4096):  # three lengths: the fewest a scaling exponent is fitted on
            cell_id = f"{method}-{length}"
            _cell(store, cell_id, method, "perplexity", "perplexity", length, config)
            nll_total = tokens_total = 0.0
            buckets_nll, buckets_tokens = np.zeros(length // 512), np.zeros(length // 512)
            per_document = []
            lookahead = method == "streaming" and length == 4096  # as if scored by a look-ahead score()
            for doc in range(4):
                nll = rng.uniform(2.0, 3.0, size=length // 512) * 512
                tokens = np.full(length // 512, 512)
                total_nll, total_tokens = float(nll.sum()), int(tokens.sum())
                store.add_sample(
                    cell_id, doc,
                    {"instance_id": f"doc{doc}", "score": math.exp(total_nll / total_tokens),
                     "metrics": {"perplexity": math.exp(total_nll / total_tokens), "nll_sum": total_nll,
                                 "tokens": total_tokens},
                     "metadata": {"position_nll": {"bucket": 512, "nll_sum": nll.tolist(), "tokens": tokens.tolist()},
                                  "causal_score": not lookahead},
                     **_cost(length, method)},
                )  # fmt: skip
                per_document.append(math.exp(total_nll / total_tokens))
                nll_total, tokens_total = nll_total + total_nll, tokens_total + total_tokens
                buckets_nll, buckets_tokens = buckets_nll + nll, buckets_tokens + tokens
            ppl = math.exp(nll_total / tokens_total)
            truth[(method, length)] = (ppl, buckets_nll / buckets_tokens)
            aggregate = {"perplexity": ppl, "tokens": tokens_total, "documents": 4, "skipped_documents": 0,
                         "mean_document_perplexity": float(np.mean(per_document))}  # fmt: skip
            store.close_cell(cell_id, "done", aggregate=aggregate)
    store.close()
    return path, truth


def test_perplexity_tables(perplexity_store):
    path, truth = perplexity_store
    tables = build(path)
    table = tables["perplexity"].set_index(["method", "length"])
    curve = tables["position_nll"]
    for (method, length), (ppl, per_bucket) in truth.items():
        row = table.loc[(method, length)]
        assert row["perplexity"] == pytest.approx(ppl)
        assert row["ci_low"] <= ppl <= row["ci_high"]  # document bootstrap of the token-weighted value
        assert row["tokens"] == 4 * length and row["documents"] == 4
        assert row["protocol"] == "protocol=sliding, window=1024, stride=512"
        mine = curve[(curve["method"] == method) & (curve["length"] == length)].sort_values("bucket")
        assert mine["nll"].to_numpy() == pytest.approx(per_bucket)
        assert mine["position"].tolist() == [512 * i for i in range(length // 512)]
    fit = tables["scaling"].set_index(["method", "metric"])["exponent"]
    assert fit[("full", "prefill_s")] == pytest.approx(2.0)
    assert fit[("streaming", "prefill_s")] == pytest.approx(1.0)
    assert fit[("streaming", "state_bytes")] == pytest.approx(0.0, abs=1e-9)
    assert "decode_ms_per_token" not in set(tables["scaling"]["metric"])  # nothing decoded


def test_perplexity_report_has_protocol_and_curves(perplexity_store, tmp_path):
    path, _ = perplexity_store
    written = write_report(path, tmp_path / "out")
    markdown = written.markdown.read_text()
    assert "## Perplexity" in markdown and "protocol=sliding, window=1024, stride=512" in markdown
    assert {"perplexity_length.png", "position_nll.png"} <= {p.name for p in written.figures}
    assert "## Passkey" not in markdown and "## LongBench" not in markdown  # sections only with data
    from reports.figures import figures

    fig, _ = figures(build(path), "full")["position_nll"]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # one legend, for the figure
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["full", "streaming"]


def test_perplexity_report_shows_the_document_mean_and_marks_lookahead_scores(perplexity_store, tmp_path):
    path, _ = perplexity_store
    tables = build(path)
    table = tables["perplexity"].set_index(["method", "length"])
    documents = tables["samples"].groupby(["method", "length"])["score"].mean()
    assert table["mean_document_perplexity"].to_dict() == pytest.approx(documents.to_dict())
    assert table["noncausal"].to_dict() == {key: key == ("streaming", 4096) for key in table.index}
    markdown = write_report(path, tmp_path / "out").markdown.read_text()
    assert "per-document mean" in markdown
    marked = [line for line in markdown.splitlines() if "‡" in line and line.startswith("|")]
    assert len(marked) == 2 and all(line.startswith("| streaming") for line in marked)  # summary + perplexity table
    assert "scored with a look-ahead" in markdown


LONGBENCH = [  # dataset, category, language, per-sample scores (fractions), truncated flags, skipped flags
    ("narrativeqa", "single-doc QA", "en", [0.2, 0.4, 0.6], [True, False, False], [False, False, False]),
    ("hotpotqa", "multi-doc QA", "en", [1.0, 0.1, 0.5], [False, False, False], [False, False, True]),
    ("dureader", "multi-doc QA", "zh", [0.3, 0.1], [True, True], [False, False]),
]


@pytest.fixture
def longbench_store(tmp_path):
    path = tmp_path / "lb.sqlite"
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    for method, offset in (("full", 0.0), ("streaming", -0.1)):
        cell_id = f"lb-{method}"
        _cell(store, cell_id, method, "longbench", "average", 4096, {"truncation": "middle"})
        idx = 0
        aggregate = {}
        for dataset, category, language, scores, truncated, skipped in LONGBENCH:
            kept = []
            for score, trunc, skip in zip(scores, truncated, skipped, strict=True):
                value = score + offset
                store.add_sample(
                    cell_id, idx,
                    {"instance_id": f"{dataset}-{idx}", "score": value, "prediction": "x", "target": "y",
                     "metrics": {"skipped": 1.0} if skip else {"score": value},
                     "metadata": {"dataset": dataset, "category": category, "language": language, "truncated": trunc},
                     **_cost(4096, method)},
                )  # fmt: skip
                idx += 1
                if not skip:
                    kept.append(value)
            aggregate[dataset] = 100 * float(np.mean(kept))
        aggregate.update({"category/multi-doc QA": (aggregate["hotpotqa"] + aggregate["dureader"]) / 2,
                          "category/single-doc QA": aggregate["narrativeqa"],
                          "avg_en": (aggregate["narrativeqa"] + aggregate["hotpotqa"]) / 2,
                          "avg_zh": aggregate["dureader"], "avg_en16": 12.5,
                          "average": float(np.mean([aggregate[d[0]] for d in LONGBENCH])),
                          "e/0-4k": 33.0, "truncated": 3, "skipped": 1})  # fmt: skip
        store.close_cell(cell_id, "done", aggregate=aggregate)
    store.close()
    return path


def test_longbench_tables(longbench_store, tmp_path):
    tables = build(longbench_store)
    lb = tables["longbench"].set_index(["method", "key"])
    assert lb.loc[("full", "hotpotqa"), "value"] == pytest.approx(55.0)  # skipped sample excluded
    assert lb.loc[("full", "narrativeqa"), "kind"] == "dataset"
    assert lb.loc[("full", "narrativeqa"), "category"] == "single-doc QA"
    assert lb.loc[("streaming", "avg_en16"), "kind"] == "average"
    assert lb.loc[("full", "category/multi-doc QA"), "kind"] == "category"
    assert lb.loc[("full", "truncated"), "value"] == 3 and lb.loc[("full", "skipped"), "value"] == 1
    assert lb.loc[("full", "e/0-4k"), "kind"] == "length bucket"
    summary = tables["summary"].set_index("method")
    average = np.mean([40.0, 55.0, 20.0])
    assert summary.loc["full", "value"] == pytest.approx(average)
    assert summary.loc["full", "n"] == 7 and summary.loc["full", "skipped"] == 1
    # Interval is the stratified bootstrap of the macro average, in the aggregate's percent scale.
    assert summary.loc["full", "ci_low"] <= average <= summary.loc["full", "ci_high"]
    assert summary.loc["full", "ci_high"] > 1.0
    paired = tables["paired"]
    assert paired["pairs"].item() == 7 and paired["mean_diff"].item() == pytest.approx(-0.1)
    markdown = write_report(longbench_store, tmp_path / "out").markdown.read_text()
    assert "## LongBench" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| avg_en16 |"))
    assert "12.5" in row
    assert "| truncated |  | 3 | 3 |" in markdown  # counts print as integers
    assert "n=7 (1 skipped)" in markdown


@pytest.fixture
def babilong_store(tmp_path):
    """full answers qa1 right and qa2 half right at both lengths; rmt's 4096 cell is unfinished (no aggregate).

    rmt runs on the plain prompt (as a fine-tuned memory is scored), full on the instructed one.
    """
    path = tmp_path / "bl.sqlite"
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    for method in ("full", "rmt"):
        for length in (0, 4096):
            cell_id = f"bl-{method}-{length}"
            prompt = {"prompt": "plain"} if method == "rmt" else {}
            _cell(store, cell_id, method, "babilong", "accuracy", length, {"tasks": ["qa1", "qa2"], **prompt})
            scores = (
                {"qa1": [100.0, 100.0], "qa2": [100.0, 0.0]}
                if method == "full"
                else {"qa1": [0.0, 100.0], "qa2": [0.0, 0.0]}
            )
            idx = 0
            for task, values in scores.items():
                for value in values:
                    store.add_sample(
                        cell_id, idx,
                        {"instance_id": f"{task}-{idx}", "score": value, "prediction": "x", "target": "garden",
                         "metrics": {"accuracy": value, task: value}, "metadata": {"task": task},
                         **_cost(max(length, 300), method)},
                    )  # fmt: skip
                    idx += 1
            if method == "rmt" and length == 4096:
                continue
            aggregate = {task: float(np.mean(values)) for task, values in scores.items()}
            aggregate |= {"chance_qa1": 50.0, "chance_qa2": 100.0, "chance": 75.0,
                          "accuracy": float(np.mean(list(aggregate.values())))}  # fmt: skip
            store.close_cell(cell_id, "done", aggregate=aggregate)
    store.close()
    return path


def test_babilong_table_section_and_figure(babilong_store, tmp_path):
    table = build(babilong_store)["babilong"].set_index(["method", "length", "babi_task"])
    assert table.loc[("full", 4096, "qa2"), "accuracy"] == 50.0 and table.loc[("full", 4096, "avg"), "accuracy"] == 75
    assert table.loc[("full", 0, "qa1"), "chance"] == 50.0 and table.loc[("full", 0, "avg"), "n"] == 4
    assert table.loc[("rmt", 4096, "qa1"), "accuracy"] == 50.0  # unfinished cell: from its samples
    assert table.loc[("rmt", 4096, "avg"), "accuracy"] == 25.0
    report = write_report(babilong_store, tmp_path / "out")
    markdown = report.markdown.read_text()
    assert "## BABILong" in markdown and "babilong_length_babilong_qa1_qa2.png" in markdown
    assert "| full | qa2 | 50.0 (2) | 50.0 (2) |" in markdown
    assert "| rmt | avg | 25.0 (4) | 25.0 (4) |" in markdown
    assert "| chance (best constant answer) | qa2 | 100 | 100 |" in markdown
    assert "babilong:qa1,qa2: instructed prompt: full; plain prompt: rmt." in markdown  # one table, each prompt named


@pytest.fixture
def ruler_store(tmp_path):
    """Two RULER tasks through lm-eval at 3 lengths; `good` falls under 85.6 at 16K, `weak` never reaches it, `blank`
    scores 0 everywhere."""
    path = tmp_path / "ruler.sqlite"
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    averages = {"good": (0.90, 0.88, 0.60), "weak": (0.50, 0.30, 0.20), "blank": (0.0, 0.0, 0.0)}
    for method, values in averages.items():
        for length, average in zip((4096, 8192, 16384), values, strict=True):
            for task, shift in (("niah_single_1", 0.05 * bool(average)), ("ruler_vt", -0.05 * bool(average))):
                cell_id = f"{method}-{task}-{length}"
                _cell(store, cell_id, method, "lm-eval", "score", length, {"tasks": [task]})
                store.add_sample(cell_id, 0, {"instance_id": "d0", "score": average + shift, "metrics": {},
                                              "metadata": {}, **_cost(length, method)})  # fmt: skip
                store.close_cell(cell_id, "done", aggregate={"score": average + shift})
    store.close()
    return path


def test_ruler_average_and_effective_lengths(ruler_store, tmp_path):
    tables = build(ruler_store)
    average = tables["ruler"].set_index(["method", "length"])
    assert average.loc[("good", 8192), "average"] == pytest.approx(88.0) and average.loc[("good", 8192), "tasks"] == 2
    effective = tables["ruler_effective"].set_index("method")
    assert effective.loc["good", "effective"] == 8192 and effective.loc["good", "half_of_shortest"] == 16384
    assert pd.isna(effective.loc["weak", "effective"]) and effective.loc["weak", "half_of_shortest"] == 8192
    markdown = write_report(ruler_store, tmp_path / "out").markdown.read_text()
    assert "## RULER" in markdown and "| good | 90.0 (2) | 88.0 (2) | 60.0 (2) |" in markdown
    assert "| weak | none | 8,192 | 50.0 |" in markdown
    assert "| blank | none | none | 0.00 |" in markdown  # half of nothing is no length at all


def test_ruler_tasks_are_lm_evals_ruler_group_and_examples_ruler_runs_each():
    import yaml

    lm_eval = pytest.importorskip("lm_eval")
    from reports.tasks import RULER_TASKS

    group = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "ruler" / "ruler.yaml").read_text())
    assert tuple(group["task"]) == RULER_TASKS
    sweep = yaml.safe_load((Path(__file__).parents[2] / "examples" / "ruler.yaml").read_text())
    assert tuple(task["options"]["tasks"][0] for task in sweep["tasks"]) == RULER_TASKS


def test_a_store_an_ulp_away_renders_the_same_report(perplexity_store, tmp_path):
    """Costs, scores and aggregates one ulp up render the same text: numbers print by their rounded value."""
    import json
    import shutil
    import sqlite3

    store, _ = perplexity_store
    nudged = tmp_path / "nudged.sqlite"
    shutil.copy(store, nudged)
    up = np.nextafter(1.0, 2.0)  # 1 + 2^-52
    with sqlite3.connect(nudged) as db:
        db.execute("UPDATE samples SET score = score * ?, prefill_s = prefill_s * ?, decode_s = decode_s * ?",
                   (up, up, up))  # fmt: skip
        for cell_id, aggregate in db.execute("SELECT cell_id, aggregate FROM cells").fetchall():
            values = {key: v * up if isinstance(v, float) else v for key, v in json.loads(aggregate).items()}
            db.execute("UPDATE cells SET aggregate = ? WHERE cell_id = ?", (json.dumps(values), cell_id))

    def text(store: Path, out: str) -> list[str]:
        lines = write_report(store, tmp_path / out).markdown.read_text().splitlines()
        return [line for line in lines if not line.startswith("Store `")]  # the path and the generation time

    assert text(nudged, "b") == text(store, "a")


@pytest.mark.parametrize("value", [1.0, 10.0, 100.0, 1000.0, 0.001, 0.25, 3.0, 47.0])
def test_numbers_an_ulp_apart_print_alike(value):
    from reports.text import fmt

    assert fmt(np.nextafter(value, 0.0)) == fmt(value) == fmt(np.nextafter(value, np.inf))

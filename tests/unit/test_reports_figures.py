"""Report figures and marks a reviewer reads: human ticks, fits through the points, fronts per length, †."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from reports import build
from reports.axes import human_bytes, nice_log_ticks, seconds, tokens
from reports.figures import BEYOND_LABEL, _figure, figures
from reports.render import write_report
from reports.stats import pareto_front
from reports.text import FOOTNOTE

LENGTHS = (256, 384, 512, 768)  # four lengths, so the power-law fits (3+ lengths) are drawn


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    path = tmp_path_factory.mktemp("figures") / "store.sqlite"
    spec = SweepSpec(
        model="tiny-random-llama", samples=2, output=str(path), seed=0,
        methods=[{"name": "full"}, {"name": "streaming", "options": {"n_sink": 4, "window": 32, "chunk_size": 64}},
                 {"name": "uio", "options": {"segment": 64, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}}],
        tasks=[{"name": "passkey", "lengths": list(LENGTHS), "options": {"max_new_tokens": 4}}],
    )  # fmt: skip
    assert {o.status for o in run_sweep(spec, progress=False)} == {"done"}
    return path


def _sql(path, query, *args):
    with sqlite3.connect(path) as db:
        return db.execute(query, args).fetchall()


@pytest.fixture
def store(sweep_store, tmp_path):
    """A private copy whose full-attention cell at the longest length is flagged past the trained window.

    The runner writes `metadata.beyond_trained_window` per sample; it is set here by hand so the test
    does not depend on a model short enough to cross its window at these lengths.
    """
    path = tmp_path / "store.sqlite"
    shutil.copy(sweep_store, path)
    for cell_id, idx, metadata, label, length in _sql(
        path, "SELECT cell_id, idx, metadata, label, length FROM samples JOIN cells USING (cell_id)"
    ):
        metadata = {k: v for k, v in json.loads(metadata).items() if k != "beyond_trained_window"}
        metadata["beyond_trained_window"] = label == "full" and length == LENGTHS[-1]
        _sql(path, "UPDATE samples SET metadata = ? WHERE cell_id = ? AND idx = ?", json.dumps(metadata), cell_id, idx)
    return path


def test_human_labels():
    assert [tokens(n) for n in (512, 1024, 1536, 4096, 32768, 100_000, 131072, 2**20)] == [
        "512", "1K", "1.5K", "4K", "32K", "100K", "128K", "1M"
    ]  # fmt: skip
    assert [human_bytes(n) for n in (512, 64 * 2**20, 1.5 * 2**30)] == ["512 B", "64 MiB", "1.5 GiB"]
    assert [human_bytes(n) for n in (1010 * 2**20, 1000)] == ["1010 MiB", "1000 B"]  # not 1.01e+03 MiB
    assert [seconds(x) for x in (5e-5, 0.02, 1.5)] == ["50 µs", "20 ms", "1.5 s"]
    # Few ticks over a wide range, at least two over a narrow one (then the range widens to them).
    wide = nice_log_ticks([4096, 120 * 2**20], "bytes")
    assert 2 <= len(wide) <= 6 and all(np.log2(wide) % 1 == 0)
    assert nice_log_ticks([64 * 2**20, 100 * 2**20], "bytes") == [64 * 2**20, 128 * 2**20]
    assert nice_log_ticks([0.3, 0.4], "seconds") == [0.2, 0.5]


@pytest.mark.parametrize("panels", range(1, 8))
def test_grid_has_no_empty_panels(panels):
    fig, axes = _figure(panels, columns=3)
    assert len(fig.axes) == len(axes) == panels


def test_scaling_fits_the_per_length_medians(store):
    tables = build(store)
    fit = tables["scaling"].set_index(["task", "method", "metric"])
    for method in ("full", "streaming", "uio"):
        rows = _sql(
            store,
            "SELECT length, input_tokens, state_bytes FROM samples JOIN cells USING (cell_id) WHERE label = ?",
            method,
        )
        by_length = {}
        for length, x, y in rows:
            by_length.setdefault(length, []).append((x, y))
        x, y = np.log([np.median(np.array(v, dtype=float), axis=0) for v in by_length.values()]).T
        label = "uio (untrained)" if method == "uio" else method  # no checkpoint: the report says so
        row = fit.loc[("passkey", label, "state_bytes")]
        assert row["exponent"] == pytest.approx(np.polyfit(x, y, 1)[0], abs=1e-9)
        assert row["lengths"] == len(LENGTHS)
    # Full attention keeps K and V of prompt and answer: linear; the StreamingLLM cache is capped: flat.
    assert 0.9 < fit.loc[("passkey", "full", "state_bytes"), "exponent"] <= 1.0
    assert fit.loc[("passkey", "streaming", "state_bytes"), "exponent"] == pytest.approx(0.0, abs=1e-6)
    # Two lengths left: no exponent (a line through two points always fits).
    _sql(store, "DELETE FROM samples WHERE cell_id IN (SELECT cell_id FROM cells WHERE length IN (?, ?))", *LENGTHS[:2])
    short = build(store)["scaling"]
    assert short["exponent"].isna().all() and (short["lengths"] == 2).all()


def test_pareto_front_is_taken_within_each_length(store):
    frame = build(store)["tradeoff"]
    for _, group in frame.groupby(["task", "length"]):
        assert group["pareto_mem"].tolist() == pareto_front(group["peak_mem_bytes"], group["value"], True, 0.0).tolist()
        assert group["pareto_prefill"].tolist() == pareto_front(group["prefill_s"], group["value"], True, 0.0).tolist()
    # Random tiny models find no passkey: at chance, no cell is a trade-off, however cheap.
    at_chance = frame["value"] <= 0
    assert not frame.loc[at_chance, ["pareto_mem", "pareto_prefill"]].any().any()


def _labels(axis) -> list[str]:
    formatter = axis.get_major_formatter()
    return [formatter(tick, i) for i, tick in enumerate(axis.get_majorticklocs())]


def test_cost_figure_reads_like_a_paper_figure(store):
    tables = build(store)
    made = figures(tables, "full")
    fig, _ = made["cost_passkey"]
    medians = tables["cost"].groupby(["method", "length"]).median(numeric_only=True)
    measured = [m for m in ("prefill_s", "decode_ms_per_token", "peak_mem_bytes", "state_bytes") if
                (medians[m] > 0).any()]  # fmt: skip
    assert len(fig.axes) == len(measured)  # one panel per recorded metric, none empty
    for ax in fig.axes:
        assert ax.collections  # points drawn
        assert _labels(ax.xaxis) == ["256", "384", "512", "768"]  # ticks at the measured lengths only
        assert len(ax.xaxis.get_minorticklocs()) == len(ax.yaxis.get_minorticklocs()) == 0
        assert all(label.endswith(("B", "s")) for label in _labels(ax.yaxis)), _labels(ax.yaxis)
        assert ax.get_legend() is None  # one legend for the figure, not one per panel
        for line in ax.get_lines():  # fits span the measured range only
            assert line.get_xdata().min() >= min(LENGTHS) - 1 and line.get_xdata().max() <= max(LENGTHS) + 1
    (legend,) = fig.legends  # the methods once, and the hollow marker's meaning (full's longest cell)
    methods = sorted(tables["cost"]["method"].unique(), key=lambda m: (m != "full", m))
    assert [t.get_text() for t in legend.get_texts()] == [*methods, BEYOND_LABEL]
    state = next(ax for ax in fig.axes if ax.get_title().startswith("state"))
    full = next(line for line in state.get_lines() if line.get_xdata().size)  # the first method drawn is full
    fitted = np.interp(LENGTHS, full.get_xdata(), full.get_ydata())
    assert fitted == pytest.approx(medians.loc["full", "state_bytes"].to_numpy(), rel=0.05)  # through the points
    assert {"tradeoff_passkey_memory", "tradeoff_passkey_prefill"} <= set(made)
    tradeoff, _ = made["tradeoff_passkey_prefill"]
    assert [ax.get_title() for ax in tradeoff.axes] == [f"length {n}" for n in LENGTHS]


def _hollow(ax) -> int:
    return sum(int(np.all(c.get_facecolors() == 1.0, axis=1).sum()) for c in ax.collections if len(c.get_offsets()))


def test_cells_past_the_trained_window_are_marked(store, tmp_path):
    written = write_report(store, tmp_path / "out")
    markdown = written.markdown.read_text()
    full_row = next(line for line in markdown.splitlines() if line.startswith("| full | ") and "n=2" in line)
    cells = full_row.strip("| \n").split(" | ")[1:]
    assert ["†" in c for c in cells] == [False, False, False, True]  # the longest length only
    assert FOOTNOTE in markdown and "†" in written.html.read_text()
    streaming_row = next(line for line in markdown.splitlines() if line.startswith("| streaming | ") and "n=2" in line)
    assert "†" not in streaming_row
    made = figures(build(store), "full")
    (ax,) = made["passkey_length"][0].axes
    assert _hollow(ax) == 1  # one cell, full at the longest length
    assert BEYOND_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "trained window" in made["passkey_length"][1]


def test_stores_without_the_flag_mark_nothing(store, tmp_path):
    _sql(store, "UPDATE samples SET metadata = json_remove(metadata, '$.beyond_trained_window')")
    tables = build(store)
    assert not tables["summary"]["beyond_window"].any()
    markdown = write_report(store, tmp_path / "out").markdown.read_text()
    assert "†" not in markdown and FOOTNOTE not in markdown
    (ax,) = figures(tables, "full")["passkey_length"][0].axes
    assert _hollow(ax) == 0 and BEYOND_LABEL not in [t.get_text() for t in ax.get_legend().get_texts()]


def test_method_sources_are_public(store, tmp_path):
    markdown = write_report(store, tmp_path / "out").markdown.read_text()
    assert "research/" not in markdown  # notes outside the repository, which a reader cannot open
    for source in ("https://arxiv.org/abs/2309.17453", "https://github.com/mit-han-lab/streaming-llm",
                   "https://arxiv.org/abs/2406.18173", "https://github.com/wenhaoli-xmu/UIO-LLMs",
                   "https://arxiv.org/abs/2306.15595", "https://arxiv.org/abs/2309.00071"):  # fmt: skip
        assert source in markdown


def test_one_length_draws_each_method_once_and_no_lines(store, tmp_path):
    _sql(store, "DELETE FROM samples WHERE cell_id IN (SELECT cell_id FROM cells WHERE length != ?)", LENGTHS[0])
    _sql(store, "DELETE FROM cells WHERE length != ?", LENGTHS[0])
    tables = build(store)
    made = figures(tables, "full")
    assert "passkey_length" not in made  # a line of one point says nothing
    fig, caption = made["cost_passkey"]
    assert caption == f"passkey: median cost per sample of each method at {LENGTHS[0]} tokens."
    methods = sorted(tables["cost"]["method"].unique(), key=lambda m: (m != "full", m))
    for ax in fig.axes:
        assert [label.get_text() for label in ax.get_yticklabels()] == methods and not ax.get_lines()
        assert sum(len(c.get_offsets()) for c in ax.collections) == len(methods)

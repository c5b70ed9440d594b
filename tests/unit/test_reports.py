"""Reports from a real small sweep (tiny random model, full vs streaming, passkey at 2 lengths x 3 samples)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pytest

from harness.cli import main
from harness.store import Store
from reports import build
from reports.render import write_report

LENGTHS = (256, 384)  # passkey needs ~250 tokens of frame
OOM_LENGTH = 1024


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    path = tmp_path_factory.mktemp("sweep") / "store.sqlite"
    spec = SweepSpec(
        model="tiny-random-llama", samples=3, output=str(path), seed=0,
        methods=[{"name": "full"}, {"name": "streaming", "options": {"n_sink": 4, "window": 32, "chunk_size": 64}}],
        tasks=[{"name": "passkey", "lengths": list(LENGTHS), "options": {"max_new_tokens": 4}}],
    )  # fmt: skip
    outcomes = run_sweep(spec, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 4
    return path


@pytest.fixture
def store(sweep_store, tmp_path):
    """A private copy, so tests may edit it."""
    path = tmp_path / "store.sqlite"
    shutil.copy(sweep_store, path)
    return path


def _sql(path, query, *args):
    with sqlite3.connect(path) as db:
        return db.execute(query, args).fetchall()


def test_summary_matches_store(store):
    # Make scores differ between cells and samples so the check can fail (the random model scores 0).
    _sql(store, "UPDATE samples SET score = (idx + length(cell_id)) % 2 WHERE idx != 1")
    tables = build(store)
    summary = tables["summary"].set_index(["method", "length"])
    assert len(summary) == 4
    expected = _sql(
        store,
        "SELECT c.label, c.length, c.aggregate, c.headline, COUNT(s.idx), AVG(s.score) FROM cells c "
        "JOIN samples s USING (cell_id) GROUP BY c.cell_id",
    )
    for label, length, aggregate, headline, count, mean in expected:
        row = summary.loc[(label, length)]
        assert row["n"] == count == 3
        assert row["value"] == pytest.approx(json.loads(aggregate)[headline])  # point value from the aggregate
        assert row["status"] == "done"
        assert row["ci_low"] <= mean + 1e-9 and row["ci_high"] >= mean - 1e-9  # interval over sample scores
    depth = tables["passkey_depth"].set_index(["method", "length", "depth"])
    rows = _sql(
        store,
        "SELECT c.label, c.length, json_extract(s.metadata, '$.depth'), AVG(s.score), COUNT(*) "
        "FROM cells c JOIN samples s USING (cell_id) GROUP BY 1, 2, 3",
    )
    assert len(rows) == len(depth) == 12
    for label, length, d, mean, count in rows:
        assert depth.loc[(label, length, d), "accuracy"] == pytest.approx(mean)
        assert depth.loc[(label, length, d), "n"] == count


def test_cost_and_paired_tables(store):
    tables = build(store)
    cost = tables["cost"]
    assert len(cost) == _sql(store, "SELECT COUNT(*) FROM samples")[0][0] == 12
    decode = _sql(
        store,
        "SELECT AVG(1000.0 * decode_s / decode_tokens) FROM samples JOIN cells USING (cell_id) WHERE label='full'",
    )[0][0]
    assert cost.loc[cost["method"] == "full", "decode_ms_per_token"].mean() == pytest.approx(decode)
    # Two lengths: a line through two medians always "fits", so no exponent is claimed (the fits on
    # 3+ lengths are tested in test_reports_figures.py).
    fit = tables["scaling"].set_index(["task", "method", "metric"])
    assert fit["exponent"].isna().all() and (fit["lengths"] == len(LENGTHS)).all()
    markdown = write_report(store, store.parent / "out").markdown.read_text()
    assert "Fitted scaling exponents" not in markdown  # a table of n/a says nothing
    assert "Scaling exponents need 3+ lengths per method; this store has at most 2." in markdown
    paired = tables["paired"]
    assert set(paired["method"]) == {"streaming"} and set(paired["length"]) == set(LENGTHS)
    assert (paired["pairs"] == 3).all()


def test_paired_difference_on_edited_scores(store):
    _sql(store, "UPDATE samples SET score = 1.0 WHERE cell_id IN (SELECT cell_id FROM cells WHERE label='streaming')")
    _sql(store, "UPDATE samples SET score = 0.0 WHERE cell_id IN (SELECT cell_id FROM cells WHERE label='full')")
    paired = build(store, baseline="full")["paired"]
    assert (paired["mean_diff"] == 1.0).all() and (paired["ci_low"] == 1.0).all()
    assert paired["p_value"].tolist() == pytest.approx([2 / 8, 2 / 8])  # exact: 2 of 2**3 sign patterns
    reverse = build(store, baseline="streaming")["paired"]
    assert (reverse["mean_diff"] == -1.0).all()


@pytest.fixture(scope="module")
def edited_report(sweep_store, tmp_path_factory):
    """The sweep plus an OOM cell (full at a longer length) and a script-like prediction, reported once."""
    path = tmp_path_factory.mktemp("edited") / "store.sqlite"
    shutil.copy(sweep_store, path)
    db = Store(path)
    row = dict(db.db.execute("SELECT * FROM cells WHERE label='full' AND length=?", (LENGTHS[-1],)).fetchone())
    fields = {k: row[k] for k in ("label", "model", "dtype", "device", "method", "task", "task_version",
                                  "headline", "seed")}  # fmt: skip
    fields.update(method_config=json.loads(row["method_config"]), task_config=json.loads(row["task_config"]))
    db.open_cell("oomcell", row["run_id"], {**fields, "length": OOM_LENGTH})
    db.close_cell("oomcell", "oom", error="OutOfMemoryError: CUDA out of memory. Tried to allocate <2.00 GiB>")
    db.db.execute("UPDATE samples SET prediction = '<script>alert(1)</script>' WHERE idx = 0")
    db.close()
    return path, write_report(path, path.parent / "out")


def test_oom_cell_shown_in_markdown_and_html(edited_report):
    store, written = edited_report
    summary = build(store)["summary"]
    assert summary.loc[(summary["method"] == "full") & (summary["length"] == OOM_LENGTH), "status"].item() == "oom"
    markdown = written.markdown.read_text()
    full_row = next(line for line in markdown.splitlines() if line.startswith("| full | ") and "n=3" in line)
    assert full_row.rstrip().endswith("| OOM |")  # OOM_LENGTH is the last length column
    streaming_row = next(line for line in markdown.splitlines() if line.startswith("| streaming | ") and "n=3" in line)
    assert streaming_row.rstrip().endswith("| not run |")
    html = written.html.read_text()
    assert '<td class="status-oom">OOM</td>' in html
    assert "Tried to allocate &lt;2.00 GiB&gt;" in html


def test_html_escapes_predictions_and_is_self_contained(edited_report):
    _, written = edited_report
    html = written.html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in written.markdown.read_text()
    # Figures are inline data URIs and also written as PNG files; nothing is fetched.
    names = {p.name for p in written.figures}
    assert {"passkey_heatmap.png", "passkey_length.png", "cost_passkey.png", "tradeoff_passkey_memory.png",
            "tradeoff_passkey_prefill.png"} <= names  # fmt: skip
    assert html.count("data:image/png;base64,") == len(names)
    assert 'src="http' not in html and 'href="http' not in html
    for path in written.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_direction_lookup():
    from reports.tables import higher_is_better

    assert higher_is_better("passkey") is True
    assert higher_is_better("no-such-task") is True  # unknown names fall back to higher-better


def test_report_is_deterministic(store):
    first, second = build(store)["summary"], build(store)["summary"]
    assert first[["ci_low", "ci_high"]].equals(second[["ci_low", "ci_high"]])


def test_cli_report(store, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(store), "--out", str(out), "--baseline", "streaming"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    assert "Paired comparison against streaming" in (out / "report.md").read_text()


def test_cli_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    Store(tmp_path / "empty.sqlite").close()
    assert main(["report", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no cells" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["report", str(tmp_path / "junk.sqlite"), "--out", str(tmp_path / "o")]) == 2


def test_provenance_states_each_trained_methods_budget(store, tmp_path):
    budget = {"data": "books", "stages": "4096:16,16384:6", "steps": 22, "tokens": 163840, "longest_document": 16384,
              "seed": 0}  # fmt: skip
    label = "streaming"
    config = json.loads(_sql(store, "SELECT method_config FROM cells WHERE label = ?", label)[0][0])
    config = {**config, "checkpoint": {"path": "checkpoints/x", "sha256": "ab" * 32, "budget": budget}}
    with sqlite3.connect(store) as db:
        db.execute("UPDATE cells SET method_config = ? WHERE label = ?", (json.dumps(config), label))
    (row,) = build(store)["training"].to_dict("records")
    assert row == {"method": label, "checkpoint": "checkpoints/x", "sha256": "ab" * 6, **budget}
    write_report(store, tmp_path / "r")
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "Training budget per trained method" in markdown and "| 163840 |" in markdown


def test_no_interval_from_two_samples_and_no_spread_said_so(store, tmp_path):
    full_256 = "SELECT cell_id FROM cells WHERE label = 'full' AND length = 256"
    _sql(store, f"DELETE FROM samples WHERE idx = 2 AND cell_id IN ({full_256})")
    _sql(store, "UPDATE samples SET score = 1.0 WHERE cell_id IN (SELECT cell_id FROM cells WHERE label = 'streaming')")
    summary = build(store)["summary"].set_index(["method", "length"])
    assert summary.loc[("full", 256), "n"] == 2 and math.isnan(summary.loc[("full", 256), "ci_low"])
    markdown = write_report(store, tmp_path / "out").markdown.read_text()
    full = next(line for line in markdown.splitlines() if line.startswith("| full |") and "n=2" in line)
    assert "n=2" in full and "[" not in full.split("n=2")[0].split("|")[-1]
    streaming = next(line for line in markdown.splitlines() if line.startswith("| streaming |") and "n=3" in line)
    assert "(no spread) n=3" in streaming  # every sample 1.0 (the point value is the stored aggregate)


def test_provenance_says_a_run_stopped_short_of_its_stages(store):
    budget = {"data": "books", "stages": "4096:40,16384:16", "steps": 44, "tokens": 229376, "longest_document": 16384,
              "seed": 0}  # fmt: skip
    config = json.loads(_sql(store, "SELECT method_config FROM cells WHERE label = 'streaming'")[0][0])
    config = {**config, "checkpoint": {"path": "checkpoints/x", "sha256": "ab" * 32, "budget": budget}}
    with sqlite3.connect(store) as db:
        db.execute("UPDATE cells SET method_config = ? WHERE label = 'streaming'", (json.dumps(config),))
    (row,) = build(store)["training"].to_dict("records")
    assert row["steps"] == "44 of 56 (stopped early)"

"""Matched-memory view from rows written with `Store`: fractions of full attention's KV, Pareto fronts, the section."""

from __future__ import annotations

import json

import pytest

from harness.store import Store
from reports import build
from reports.render import write_report

PROVENANCE = {"git_commit": "abc123", "packages": {"torch": "2.13"}, "device": "cpu: test"}
HEADLINES = {"passkey": "accuracy", "perplexity": "perplexity"}
SAMPLES = 2


@pytest.fixture(autouse=True)
def empty_model_cache(tmp_path, monkeypatch):
    """An lch model cache without any model, so a config is found only where a test puts one."""
    monkeypatch.setenv("LCH_CACHE", str(tmp_path / "cache"))


def _cell(label: str, task: str, length: int, value: float, state: int | None, options: dict | None = None) -> dict:
    return {"label": label, "method": label.split("-")[0], "options": options or {}, "task": task, "length": length,
            "value": value, "state": state}  # fmt: skip


def _store(path, cells: list[dict], model: str = "no-such-model", dtype: str = "float32"):
    """A store with one cell per entry: every sample scores `value` and holds `state` bytes."""
    store = Store(path)
    store.start_run("run1", "test", PROVENANCE, {})
    for i, cell in enumerate(cells):
        cell_id, headline = f"cell{i}", HEADLINES[cell["task"]]
        store.open_cell(
            cell_id, "run1",
            {"label": cell["label"], "model": model, "dtype": dtype, "device": "cpu", "method": cell["method"],
             "method_config": cell["options"], "task": cell["task"], "task_version": 1, "task_config": {},
             "headline": headline, "length": cell["length"], "seed": 0},
        )  # fmt: skip
        for idx in range(SAMPLES):
            store.add_sample(
                cell_id, idx,
                {"instance_id": f"i{idx}", "score": cell["value"], "metrics": {headline: cell["value"]},
                 "metadata": {}, "input_tokens": cell["length"], "prefill_s": 0.1, "decode_s": 0.0,
                 "decode_tokens": 0, "peak_mem_bytes": 10**6, "state_bytes": cell["state"]},
            )  # fmt: skip
        store.close_cell(cell_id, "done", aggregate={headline: cell["value"]})
    store.close()
    return path


def _memory(path) -> dict:
    """(method, length) -> row of the matched-memory table."""
    return build(path)["memory"].set_index(["method", "length"]).to_dict("index")


@pytest.fixture
def measured_store(tmp_path):
    """Passkey at two lengths: plain full, full with YaRN (given twice the state, to tell them apart), streaming."""
    cells = []
    for length in (1024, 2048):
        cells += [_cell("full", "passkey", length, 1.0, 1024 * length),
                  _cell("full-yarn", "passkey", length, 1.0, 2048 * length, {"rope_scaling": "yarn", "rope_factor": 2}),
                  _cell("streaming", "passkey", length, 0.5, 256 * 1024)]  # fmt: skip
    return _store(tmp_path / "measured.sqlite", cells)


def test_fraction_against_the_stored_full_attention_samples(measured_store):
    memory = _memory(measured_store)
    assert memory[("streaming", 1024)]["fraction"] == pytest.approx(0.25)
    assert memory[("streaming", 2048)]["fraction"] == pytest.approx(0.125)
    # The reference is the plain full run, not the one with RoPE scaling options.
    assert memory[("full", 2048)]["fraction"] == pytest.approx(1.0)
    assert memory[("full-yarn", 2048)]["fraction"] == pytest.approx(2.0)
    assert memory[("streaming", 2048)]["full_kv_bytes"] == 1024 * 2048
    assert {row["reference"] for row in memory.values()} == {"measured"}


def test_fraction_from_the_model_config_without_full_samples(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    # head_dim is given and differs from hidden_size / heads (16): the config's own value counts.
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
              "head_dim": 32}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    cells = [_cell("streaming", "passkey", 1024, 0.5, 65_536)]
    path = _store(tmp_path / "config.sqlite", cells, str(model), "bfloat16")
    row = _memory(path)[("streaming", 1024)]
    full = 2 * 2 * 2 * 32 * 1024 * 2  # K and V x layers x KV heads x head dim x length x bfloat16 bytes
    assert row["full_kv_bytes"] == full and row["reference"] == "model config"
    assert row["fraction"] == pytest.approx(65_536 / full)


def test_pareto_front_where_higher_is_better(tmp_path):
    cells = [
        _cell("full", "passkey", 1024, 1.0, 1000),
        _cell("a", "passkey", 1024, 0.8, 100),
        _cell("tie", "passkey", 1024, 0.8, 100),  # equal to a in both: neither dominates the other
        _cell("dominated", "passkey", 1024, 0.6, 200),  # more state than a and a lower score
        _cell("costlier", "passkey", 1024, 0.8, 500),  # a's score for more state
        _cell("chance", "passkey", 1024, 0.0, 50),  # least state, but finds no passkey: no trade-off
    ]
    memory = _memory(_store(tmp_path / "up.sqlite", cells))
    front = {method for (method, _), row in memory.items() if row["pareto"]}
    assert front == {"full", "a", "tie"}


def test_pareto_front_where_lower_is_better(tmp_path):
    cells = [
        _cell("full", "perplexity", 4096, 10.0, 1000),
        _cell("small", "perplexity", 4096, 40.0, 50),  # least state: on the front, however poor
        _cell("a", "perplexity", 4096, 12.0, 250),
        _cell("tie", "perplexity", 4096, 12.0, 250),
        _cell("dominated", "perplexity", 4096, 15.0, 300),  # more state than a and a higher perplexity
        _cell("middle", "perplexity", 4096, 11.0, 500),
    ]
    memory = _memory(_store(tmp_path / "down.sqlite", cells))
    front = {method for (method, _), row in memory.items() if row["pareto"]}
    # Read as higher-is-better, only "small" (highest perplexity, least state) would be on it.
    assert front == {"full", "small", "a", "tie", "middle"}
    assert memory[("a", 4096)]["fraction"] == pytest.approx(0.25)


def test_section_in_markdown_and_html(measured_store, tmp_path):
    written = write_report(measured_store, tmp_path / "out")
    markdown, html = written.markdown.read_text(), written.html.read_text()
    assert "## Matched memory" in markdown and "<h2>Matched memory</h2>" in html
    assert "**passkey at 1,024 tokens; full attention's KV: 1 MiB (measured)**" in markdown
    assert "| streaming | 0.5 | 256 KiB | 25.0% | yes |" in markdown
    assert "| full-yarn | 1.00 | 2 MiB | 200% |  |" in markdown  # full's score for more state
    assert "memory_passkey.png" in {p.name for p in written.figures}
    assert "<td>12.5%</td>" in html
    assert "No full-attention reference" not in markdown


def test_one_line_when_there_is_no_full_attention_reference(tmp_path):
    path = _store(tmp_path / "none.sqlite", [_cell("streaming", "passkey", 1024, 0.5, 65_536)])
    written = write_report(path, tmp_path / "out")
    markdown = written.markdown.read_text()
    section = markdown.split("## Matched memory")[1].split("\n## ")[0]
    missing = [line for line in section.splitlines() if line.startswith("No full-attention reference")]
    assert missing == [
        "No full-attention reference for passkey at 1,024 tokens (no-such-model): no `full` samples at that task, "
        "model and length, and the model's config.json (layers, KV heads, head dim) is not on this machine."
    ]
    assert "|" not in section  # no table
    assert not any(p.name.startswith("memory_") for p in written.figures)
    assert "No full-attention reference for passkey" in written.html.read_text()


def test_one_line_when_no_sample_recorded_its_state(tmp_path):
    path = _store(tmp_path / "stateless.sqlite", [_cell("full", "passkey", 1024, 1.0, None)])
    assert "memory" not in build(path)
    markdown = write_report(path, tmp_path / "out").markdown.read_text()
    assert "No matched-memory view: no scored sample in this store recorded its state bytes." in markdown

"""Per-token gain of memory over its control, from rows written with `Store` as the perplexity task writes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.store import Store
from reports import build
from reports.render import write_report
from tasks import token_nll
from tasks.perplexity import position_curve

PROVENANCE = {"git_commit": "abc123", "packages": {"torch": "2.13"}, "device": "cpu: test"}
LENGTH, BUCKET = 300, 128
SWEEP = {
    "model": "tiny-random-llama",
    "methods": [{"name": "uio", "label": "uio-small", "control": "no-memory"},
                {"name": "rmt", "label": "no-memory", "options": {"memory_tokens": 0}}, {"name": "full"}],
    "tasks": [{"name": "perplexity", "lengths": [LENGTH]}],
}  # fmt: skip


def _write(path, config: dict, nll: dict[str, list[np.ndarray]]) -> None:
    """One perplexity cell per label, documents `doc0..`, each storing its per-token NLLs and their curve."""
    store = Store(path)
    store.start_run("run1", "lch run", PROVENANCE, config)
    for label, documents in nll.items():
        store.open_cell(
            label, "run1",
            {"label": label, "model": "tiny-random-llama", "dtype": "float32", "device": "cpu", "method": label,
             "method_config": {}, "task": "perplexity", "task_version": 1, "task_config": {"bucket": BUCKET},
             "headline": "perplexity", "length": LENGTH, "seed": 0},
        )  # fmt: skip
        for idx, values in enumerate(documents):
            curve = position_curve(torch.tensor(values), BUCKET)
            store.add_sample(
                label, idx,
                {"instance_id": f"doc{idx}", "score": float(np.exp(values.mean())),
                 "metrics": {"nll_sum": float(values.sum()), "tokens": float(values.size)},
                 "metadata": {"position_nll": curve, "token_nll": token_nll.encode(values)},
                 "input_tokens": LENGTH, "prefill_s": 0.1, "decode_s": 0.0, "decode_tokens": 0, "state_bytes": 64},
            )  # fmt: skip
        store.close_cell(label, "done", aggregate={"perplexity": 1.0})
    store.close()


@pytest.fixture
def documents():
    rng = np.random.default_rng(0)
    control = [rng.uniform(0.5, 6.0, LENGTH - 1) for _ in range(2)]
    gains = [rng.choice([-3.0, 0.0, 0.5, 2.5], LENGTH - 1) for _ in range(2)]
    method = [c - g for c, g in zip(control, gains, strict=True)]
    return control, method


def test_gain_per_bucket_is_the_controls_nll_minus_the_methods(tmp_path, documents):
    control, method = documents
    odd = np.zeros(LENGTH - 2)  # a third document, scored to another size by the control: left out
    _write(tmp_path / "s.sqlite", SWEEP,
           {"uio-small": [*method, np.zeros(LENGTH - 1)], "no-memory": [*control, odd], "full": control})  # fmt: skip
    frame = build(tmp_path / "s.sqlite")["memory_gain"]
    assert set(frame["method"]) == {"uio-small"} and set(frame["control"]) == {"no-memory"}
    gain = np.concatenate([c[None] - m[None] for c, m in zip(control, method, strict=True)])  # [documents, T-1]
    # buckets of 32 positions (8 to 16 to the 300 tokens): 0..31 (tokens 1..31), 32..63, ..., 288..299
    width = 32
    spans = [(max(p - 1, 0), min(p + width - 1, LENGTH - 1)) for p in range(0, LENGTH, width)]
    assert len(frame) == len(spans) == 10
    for (start, end), row in zip(spans, frame.itertuples(), strict=True):
        chunk = gain[:, start:end]
        assert row.position == (start + 1) // width * width and row.documents == 2 and row.tokens == chunk.size
        assert row.mean_gain == pytest.approx(chunk.mean(), abs=0.02)  # float16 storage
        assert row.helped == pytest.approx((chunk > 2).mean()) and row.hurt == pytest.approx((chunk < -2).mean())


def test_the_report_shows_the_gain_only_where_a_sweep_named_a_control(tmp_path, documents):
    control, method = documents
    _write(tmp_path / "s.sqlite", SWEEP, {"uio-small": method, "no-memory": control})
    markdown = write_report(tmp_path / "s.sqlite", tmp_path / "out").markdown.read_text()
    assert "## Where memory helps, per token" in markdown and "uio-small over no-memory" in markdown
    plain = {**SWEEP, "methods": [{k: v for k, v in m.items() if k != "control"} for m in SWEEP["methods"]]}
    _write(tmp_path / "plain.sqlite", plain, {"uio-small": method, "no-memory": control})
    assert "memory_gain" not in build(tmp_path / "plain.sqlite")
    markdown = write_report(tmp_path / "plain.sqlite", tmp_path / "out2").markdown.read_text()
    assert "Where memory helps" not in markdown


def test_a_control_that_did_not_run_the_length_is_named_not_dropped(tmp_path, documents):
    _, method = documents
    _write(tmp_path / "s.sqlite", SWEEP, {"uio-small": method})  # the control scored nothing
    tables = build(tmp_path / "s.sqlite")
    assert "memory_gain" not in tables
    assert tables["memory_gain_unpaired"].to_dict("records") == [
        {"method": "uio-small", "control": "no-memory", "length": LENGTH}
    ]
    markdown = write_report(tmp_path / "s.sqlite", tmp_path / "out").markdown.read_text()
    assert "## Where memory helps, per token" in markdown
    assert (
        f"Not compared, the control having no perplexity cell at that length: uio-small over no-memory at {LENGTH}"
        in markdown
    )


def test_the_position_curve_has_8_to_16_buckets_when_token_nlls_are_stored(tmp_path, documents):
    control, method = documents
    _write(tmp_path / "s.sqlite", SWEEP, {"uio-small": method, "no-memory": control})
    curve = build(tmp_path / "s.sqlite")["position_nll"]
    mine = curve[curve["method"] == "uio-small"].sort_values("bucket")
    width = 32  # the power of two that cuts 300 tokens into 8 to 16 buckets
    assert list(mine["position"]) == [width * b for b in range(len(mine))] and 8 <= len(mine) <= 16
    stored = np.concatenate([token_nll.decode(token_nll.encode(m)) for m in method])  # as float16 round-trips
    assert mine["tokens"].sum() == stored.size and mine["nll_sum"].sum() == pytest.approx(stored.sum())
    first = np.concatenate([token_nll.decode(token_nll.encode(m))[: width - 1] for m in method])
    assert mine["nll_sum"].iloc[0] == pytest.approx(first.sum())  # bucket 0: positions 1..31

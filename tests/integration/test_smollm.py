"""The embedded SmolLM2-135M: our backbone reproduces transformers, and passkey behaves as expected."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from harness.runner import run_sweep
from harness.sweep import SweepSpec
from methods.base import METHODS

pytestmark = pytest.mark.slow


def test_full_logits_equal_transformers(smollm):
    model, tokenizer = smollm
    ids = torch.randint(0, model.config.vocab_size, (600,), generator=torch.Generator().manual_seed(0))
    expected = torch.log_softmax(model(ids[None]).logits[0, :-1].float(), -1).gather(-1, ids[1:, None]).squeeze(-1)
    method = METHODS.get("full")(model, tokenizer, METHODS.get("full").Config(chunk_size=256))
    assert (method.score(ids) - expected).abs().max().item() <= 1e-4


def test_passkey_full_retrieves_and_streaming_loses_needle_outside_window(tmp_path, smollm):
    spec = SweepSpec(
        model="smollm2-135m", samples=1, output=str(tmp_path / "p.sqlite"),
        methods=[{"name": "full"}, {"name": "streaming", "options": {"window": 256}}],
        tasks=[{"name": "passkey", "lengths": [2048], "options": {"depths": [0.1]}}],
    )  # fmt: skip
    outcomes = run_sweep(spec, progress=False)
    assert [o.status for o in outcomes] == ["done", "done"]
    with sqlite3.connect(spec.output) as db:
        stored = dict(db.execute("SELECT c.label, s.score FROM samples s JOIN cells c USING (cell_id)").fetchall())
        states = dict(
            db.execute("SELECT c.label, s.state_bytes FROM samples s JOIN cells c USING (cell_id)").fetchall()
        )
        depth = json.loads(db.execute("SELECT metadata FROM samples LIMIT 1").fetchone()[0])["depth"]
    assert depth == 0.1
    assert stored == {"full": 1.0, "streaming": 0.0}
    assert states["streaming"] < states["full"] / 5  # 260 cached tokens against 2048 + decoded


def stored_scores(path):
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT c.label, s.score FROM samples s JOIN cells c USING (cell_id) ORDER BY c.label, s.idx")
        out: dict[str, list[float]] = {}
        for label, score in rows:
            out.setdefault(label, []).append(score)
    return out


def test_passkey_infllm_retrieves_the_needle_streaming_drops_with_the_same_window(tmp_path, smollm):
    """InfLLM's claim at CI scale: a 256-token window plus 4 retrieved blocks finds what the window alone loses."""
    spec = SweepSpec(
        model="smollm2-135m", samples=2, output=str(tmp_path / "p.sqlite"),
        methods=[
            {"name": "infllm", "options": {"n_local": 256, "exc_block_size": 256, "topk": 4}},
            {"name": "streaming", "options": {"window": 256}},
        ],
        tasks=[{"name": "passkey", "lengths": [2048], "options": {"depths": [0.1, 0.5]}}],
    )  # fmt: skip
    run_sweep(spec, progress=False)
    assert stored_scores(spec.output) == {"infllm": [1.0, 1.0], "streaming": [0.0, 0.0]}


@pytest.mark.long
def test_passkey_infllm_keeps_the_needle_at_32k(tmp_path, smollm):
    """Four times past the trained window, InfLLM's small preset still finds the passkey at depths 0 and 0.5.

    The first two samples of `benchmarks/infllm_passkey.yaml`'s 32K cells (about 15 minutes). In that sweep
    InfLLM found both (4/6 at 32K, 2026-11-30) and StreamingLLM none (0/6, 2026-11-29).
    """
    spec = SweepSpec(
        model="smollm2-135m", samples=2, output=str(tmp_path / "p.sqlite"),
        methods=[{"name": "infllm", "options": {"n_local": 2048, "topk": 16}}, {"name": "streaming"}],
        tasks=[{"name": "passkey", "lengths": [32768], "options": {"depths": [0.0, 0.5, 1.0]}}],
    )  # fmt: skip
    run_sweep(spec, progress=False)
    assert stored_scores(spec.output) == {"infllm": [1.0, 1.0], "streaming": [0.0, 0.0]}

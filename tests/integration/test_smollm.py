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

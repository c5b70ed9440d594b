"""The analytic FLOP count (`methods.flops`) against `torch.utils.flop_counter`, and the pairs each query sees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cases import CONFIGS, STATEFUL, build, ids_of

from harness.metering import Costs, Metered, flop_count
from methods import flops
from methods.base import METHODS

SMALL_LORA = {"uio": {"lora_rank": 4, "lora_alpha": 8}}  # the default r=128 would dwarf a 64-wide tiny model


def counted(method, prompt: torch.Tensor, new: int):
    """(ledger, flop_counter's count) of a prefill and a decode of `new` tokens."""
    costs = Costs()
    ledger = flops.Ledger()
    with flop_count(True, costs), flops.counting(ledger):
        method.reset()
        method.prefill(prompt)
        method.decode(new, stop_ids=[])
    return ledger, costs.flops


@pytest.mark.parametrize(("name", "options"), CONFIGS + STATEFUL)
def test_every_method_s_count_equals_torch_s_within_two_percent(name, options, tiny_llama_gqa):
    """Every matmul a method runs is reported: the count of every pair multiplied matches the dispatcher's."""
    method = build(name, tiny_llama_gqa, **{**options, **SMALL_LORA.get(name, {})})
    ledger, reference = counted(method, ids_of(150, seed=1), 4)
    assert reference > 0
    assert ledger.computed_flops == pytest.approx(reference, rel=0.02)
    assert ledger.attention <= ledger.computed_attention


def test_full_attention_sees_the_causal_pairs_and_nothing_else(tiny_llama_gqa):
    method = build("full", tiny_llama_gqa)
    model = tiny_llama_gqa[0]
    config = model.config
    t = 100
    ledger = flops.Ledger()
    with flops.counting(ledger):
        method.score(ids_of(t))
    head_dim = config.hidden_size // config.num_attention_heads
    causal = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * t * (t + 1) / 2
    assert ledger.attention == pytest.approx(causal)
    per_token = sum(p.numel() for layer in model.model.layers for p in layer.parameters() if p.dim() == 2)
    assert ledger.linear == pytest.approx(2 * t * (per_token + model.lm_head.weight.numel()))


def test_a_window_sees_fewer_pairs_than_full_attention_at_the_same_linear_cost(tiny_llama_gqa):
    ids = ids_of(200)
    ledgers = {}
    for name, options in [("full", {}), ("streaming", {"n_sink": 2, "window": 16, "chunk_size": 8})]:
        ledgers[name] = flops.Ledger()
        with flops.counting(ledgers[name]):
            build(name, tiny_llama_gqa, **options).score(ids)
    assert ledgers["streaming"].linear == ledgers["full"].linear
    config = tiny_llama_gqa[0].config
    head_dim = config.hidden_size // config.num_attention_heads
    seen = sum(min(p + 1, 2 + 16 + 1) for p in range(200))  # sinks + window + itself
    expected = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * seen
    assert ledgers["streaming"].attention == pytest.approx(expected)


def test_torch_s_counter_counts_cpu_attention():
    """torch's table has no formula for SDPA's CPU kernel (it counts 0); lch's `flops: true` adds one."""
    q = torch.randn(1, 4, 64, 32)
    costs = Costs()
    with flop_count(True, costs):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert costs.flops == 4 * 4 * 64 * 64 * 32


def test_metered_calls_keep_prefill_and_decode_flops_apart(tiny_llama_gqa):
    metered = Metered(build("full", tiny_llama_gqa), torch.device("cpu"))
    metered.prefill(ids_of(50))
    after_prefill = metered.costs.prefill_flops
    metered.decode(3, stop_ids=[])
    assert after_prefill > 0 and metered.costs.prefill_flops == after_prefill
    assert 0 < metered.costs.decode_flops < after_prefill  # 3 tokens (2 fed) against 50


def test_nothing_is_counted_outside_a_ledger(tiny_llama_gqa):
    assert METHODS.get("full")
    build("full", tiny_llama_gqa).score(ids_of(20))  # no ledger open: the hooks do nothing, and raise nothing
    ledger = flops.Ledger()
    with flops.counting(ledger):
        pass
    assert ledger.model_flops == 0


def test_a_run_stores_each_sample_s_flops_and_the_machine_s_peak(tmp_path):
    """Stores from before these columns get them when a run starts in them; old rows keep NULL."""
    import json
    import sqlite3

    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    def spec(samples):
        return SweepSpec(model="tiny-random-llama", samples=samples, output=str(tmp_path / "r.sqlite"),
                         methods=[{"name": "full"}], tasks=[{"name": "passkey", "lengths": [300]}])  # fmt: skip

    run_sweep(spec(1), progress=False)
    with sqlite3.connect(tmp_path / "r.sqlite") as db:  # as a store written before the columns existed
        for column in ("prefill_flops", "decode_flops"):
            db.execute(f"ALTER TABLE samples DROP COLUMN {column}")
        db.execute("ALTER TABLE runs DROP COLUMN matmul_peak")
    run_sweep(spec(2), progress=False)
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        rows = db.execute("SELECT idx, prefill_flops, decode_flops FROM samples ORDER BY idx").fetchall()
        peaks = [json.loads(p) if p else None for (p,) in db.execute("SELECT matmul_peak FROM runs ORDER BY rowid")]
    assert rows[0][1:] == (None, None) and rows[1][1] > rows[1][2] > 0
    assert peaks[0] is None and peaks[1]["gflops"] > 0 and peaks[1]["dtype"] == "float32"


def test_the_roofline_table_is_computed_from_stored_numbers_only(tmp_path):
    """Rewrite the stored seconds, FLOPs and peak: the table follows them, and marks shares under 50 %."""
    import json
    import sqlite3

    from harness.runner import run_sweep
    from harness.sweep import SweepSpec
    from reports.roofline import LOW
    from reports.tables import build
    from reports.text import Section

    path = tmp_path / "r.sqlite"
    run_sweep(SweepSpec(model="tiny-random-llama", samples=2, output=str(path), methods=[{"name": "full"}],
                        tasks=[{"name": "passkey", "lengths": [300, 400]}]), progress=False)  # fmt: skip
    with sqlite3.connect(path) as db:
        db.execute("UPDATE samples SET prefill_s = 2.0, prefill_flops = 6e9, decode_s = 1.0, decode_flops = 1e8")
        db.execute("UPDATE runs SET matmul_peak = ?", (json.dumps({"gflops": 4.0, "dtype": "float32"}),))
    tables = build(path)
    frame = tables["roofline"].set_index("length")
    assert list(frame.index) == [300, 400]
    assert frame["prefill_gflops"].tolist() == [3.0, 3.0] and frame["prefill_share"].tolist() == [75.0, 75.0]
    assert frame["decode_share"].tolist() == [2.5, 2.5]
    assert frame.loc[300, "prefill_flops_per_token"] == pytest.approx(6e9 / 300)
    from reports.sections import sections

    roofline = next(s for s in sections(tables, {}, "full") if s.title == "Cost at the roofline")
    assert isinstance(roofline, Section)
    tables_shown = [b for b in roofline.blocks if b.kind == "table"]
    assert len(tables_shown) == 2  # one a length
    row = dict(zip(tables_shown[0].columns, tables_shown[0].rows[0], strict=True))
    assert row["prefill % of peak"].rstrip("§") == "75.0" and row["decode % of peak"].rstrip("§") == f"2.50{LOW}"


def test_a_planned_count_equals_what_the_kernels_report(tiny_llama_gqa):
    """`flops.planned` (no weights, no run: how docs/cost.md plans 7B recipes) against the ledger of a real forward."""
    model, _ = tiny_llama_gqa
    ledger = flops.Ledger()
    with flops.counting(ledger):
        build("full", tiny_llama_gqa).score(ids_of(120))
    assert flops.planned(model.config, 120, flops.causal_pairs(120)) == pytest.approx(ledger.model_flops)

"""The auto-encoding check: objective, reconstruction (cached decode = teacher-forced forward), metrics, task."""

from __future__ import annotations

import copy
import sqlite3

import pytest
import torch

from harness.core.errors import UserError
from methods.base import METHODS
from methods.uio.autoencode import teacher_forced
from methods.uio.config import UIOConfig, UIOTrainConfig
from methods.uio.memory import encode
from methods.uio.model import UIO
from tasks.autoencode import bleu4, ngram_counts, rouge_l

SEGMENT, MEMORY = 16, 4


@pytest.fixture
def uio(tiny_llama_gqa):
    model, tokenizer = tiny_llama_gqa
    method = UIO(copy.deepcopy(model).double(), tokenizer,
                 UIOConfig(segment=SEGMENT, memory_tokens=MEMORY, lora_rank=2, lora_alpha=8))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return method


def segment(seed=1):
    return torch.randint(0, 256, (SEGMENT,), generator=torch.Generator().manual_seed(seed))


def test_reconstruction_is_the_greedy_path_of_the_training_forward(uio):
    """Decoding from [memory ; repeat] with the inference cache = argmax of the teacher-forced objective's logits."""
    ids = segment()
    tokens = uio.reconstruct(ids)
    assert len(tokens) == SEGMENT - 1
    forced = torch.cat([ids[:1], torch.tensor(tokens)])  # the reconstruction fed back as the text
    with torch.no_grad():
        memory = encode(uio.backbone, uio.adapters, ids[None], MEMORY)[:, 0]
        hidden = teacher_forced(uio.backbone, uio.adapters, memory, forced)
    assert uio.backbone.logits(hidden).argmax(-1).tolist() == tokens


def test_the_objective_reaches_every_trained_part_and_learns(uio):
    uio.train_config = UIOTrainConfig(objective="autoencode")
    document = torch.cat([segment(1), segment(2)])
    first = uio.backward_document(document)
    named = dict(uio.adapters.named_parameters())
    for part in ("encoder", "transfer", "memory_embedding", "repeat_embedding"):
        grads = [p.grad for name, p in named.items() if part in name and p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, part
    optimizer = torch.optim.Adam(uio.trainable_parameters(), lr=3e-2)
    for _ in range(30):
        optimizer.step()
        optimizer.zero_grad()
        last = uio.backward_document(document)
    # A frozen random 2-layer decoder copies poorly, but the loss must fall (5.54 -> 5.08 measured)
    assert last < 0.95 * first


def test_language_modelling_never_uses_the_repeat_token(uio):
    uio.train_config = UIOTrainConfig()
    uio.backward_document(torch.cat([segment(1), segment(2), segment(3)]))
    assert uio.adapters.repeat_embedding.grad is None


def test_bleu_and_rouge_by_hand():
    ref = ["the", "cat", "sat", "on", "the", "mat"]
    same = [ngram_counts(ref, ref, n) for n in range(1, 5)]
    assert bleu4([m for m, _ in same], [t for _, t in same], 6, 6, smooth=False) == pytest.approx(1.0)
    hyp = ["the", "cat", "sat", "on", "a", "mat"]
    counts = [ngram_counts(hyp, ref, n) for n in range(1, 5)]
    assert counts == [(5, 6), (3, 5), (2, 4), (1, 3)]
    matches, totals = [m for m, _ in counts], [t for _, t in counts]
    assert bleu4(matches, totals, 6, 6, smooth=False) == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    shuffled = [ngram_counts(["the", "cat", "a", "sat", "on", "mat"], ref, n) for n in range(1, 5)]
    assert shuffled[3] == (0, 3) and bleu4(*map(list, zip(*shuffled, strict=True)), 6, 6, smooth=False) == 0.0
    smoothed = (5 / 6 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    assert bleu4(matches, totals, 6, 6, smooth=True) == pytest.approx(smoothed)
    assert bleu4(matches, totals, 6, 12, smooth=True) == pytest.approx(smoothed * 2.718281828 ** (1 - 2))  # brevity
    assert rouge_l(hyp, ref) == pytest.approx(5 / 6)  # LCS "the cat sat on mat"
    assert rouge_l(["mat", "the"], ref) == pytest.approx(2 * (1 / 2 * 1 / 6) / (1 / 2 + 1 / 6))


def test_the_task_scores_a_memory_method_and_refuses_one_without_before_storing(tmp_path):
    from harness.runner import run_sweep
    from harness.sweep import SweepSpec

    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "10146_a_test_book.txt").write_text("Once upon a time, a story was told. " * 40)
    spec = SweepSpec(
        model="tiny-random-llama", samples=3, output=str(tmp_path / "s.sqlite"),
        methods=[{"name": "uio", "options": {"segment": 32, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8}},
                 {"name": "full"}],
        tasks=[{"name": "autoencode", "lengths": [32], "options": {"data_dir": str(tmp_path)}}],
    )  # fmt: skip
    with pytest.raises(UserError, match=r"needs a method with a memory to decode from \(reconstruct\(\)\); full has"):
        run_sweep(spec, progress=False)
    assert not (tmp_path / "s.sqlite").exists()  # refused before the store is touched
    outcomes = {
        o.cell.method: o for o in run_sweep(spec.model_copy(update={"methods": spec.methods[:1]}), progress=False)
    }
    assert outcomes["uio"].status == "done" and outcomes["uio"].ran == 3
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        query = "SELECT decode_s, decode_tokens, prefill_s, state_bytes FROM samples JOIN cells USING (cell_id)"
        timed = db.execute(query).fetchall()
        assert len(timed) == 3 and all(seconds > 0 and tokens == 31 for seconds, tokens, _, _ in timed)
        assert all(prefill is None and state is None for _, _, prefill, state in timed)  # no prompt read: no such cost
    from reports.render import write_report

    markdown = write_report(tmp_path / "s.sqlite", tmp_path / "r").markdown.read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("| autoencode | uio"))
    cost = [cell.strip() for cell in line.split("|")]
    assert "0 µs" not in cost and "0 B" not in cost  # no prefill time or state where there was none
    assert "tradeoff_autoencode_memory.png" in markdown and "tradeoff_autoencode_prefill.png" not in markdown
    assert METHODS.get("uio").Config(segment=32, memory_tokens=4).segment == 32

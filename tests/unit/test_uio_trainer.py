"""UIO gradient strategies against full backpropagation, on a tiny random model in float64."""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.models import load_model
from methods.uio.config import STRATEGIES, UIOConfig, UIOTrainConfig
from methods.uio.memory import encode
from methods.uio.model import UIO
from methods.uio.trainer import RUNS, document_gradients, reservoir_draws, run_document, segment_loss

SEGMENT, MEMORY, T = 8, 2, 6


@pytest.fixture(scope="module")
def uio():
    """UIO on a float64 GQA tiny model, with every adapter weight random (B = 0 would hide the encoder LoRA)."""
    model, tokenizer = load_model("tiny-random-llama-gqa")
    model.to(torch.float64)
    method = UIO(model, tokenizer, UIOConfig(segment=SEGMENT, memory_tokens=MEMORY, lora_rank=2, lora_alpha=8))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return method


@pytest.fixture(scope="module")
def document():
    return torch.randint(0, 256, (T * SEGMENT,), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(uio, document):
    return document_gradients(uio, document, "bptt", window=1)


def flat(gradients, part=""):
    return torch.cat([g.flatten() for name, g in sorted(gradients.items()) if part in name])


def relative_error(gradients, reference, part=""):
    return float((flat(gradients, part) - flat(reference, part)).norm() / flat(reference, part).norm())


def test_every_strategy_has_a_run():
    assert tuple(RUNS) == STRATEGIES


def test_reference_reaches_encoder_transfer_head_and_memory_embedding(reference):
    for part in ("encoder", "transfer", "memory_embedding"):
        assert flat(reference, part).abs().max() > 0, part


def test_training_loss_equals_inference_score_per_segment(uio, document):
    """The differentiable training forward decodes each segment exactly as inference's streaming `score`."""
    uio.reset()
    with torch.no_grad():
        logprobs = uio.score(document)
        memories = []
        for t in range(T):
            loss = segment_loss(uio.backbone, uio.adapters, document[t * SEGMENT : (t + 1) * SEGMENT], memories)
            expected = -logprobs[t * SEGMENT : (t + 1) * SEGMENT - 1].mean()
            torch.testing.assert_close(loss.float(), expected, rtol=0, atol=1e-5)
            segment = document[None, t * SEGMENT : (t + 1) * SEGMENT]
            memories.append(encode(uio.backbone, uio.adapters, segment, MEMORY)[:, 0])


@pytest.mark.parametrize("window", [T - 1, T, 10])
def test_incremental_with_window_covering_the_document_equals_bptt(uio, document, reference, window):
    torch.testing.assert_close(flat(document_gradients(uio, document, "incremental", window)), flat(reference))


@pytest.mark.parametrize("window", [1, 2, 3])
def test_incremental_equals_tbptt_for_the_same_kept_window(uio, document, reference, window):
    incremental = document_gradients(uio, document, "incremental", window)
    tbptt = document_gradients(uio, document, "tbptt", window)
    torch.testing.assert_close(flat(incremental), flat(tbptt), rtol=1e-10, atol=1e-12)
    assert relative_error(tbptt, reference, "encoder") > 1e-3  # truncation drops pairs further than S apart


@pytest.mark.parametrize("strategy", ["tbptt", "incremental", "unbiased"])
def test_transfer_head_gradient_is_exact_for_every_strategy(uio, document, reference, strategy):
    gradients = document_gradients(uio, document, strategy, window=1, seed=0)
    torch.testing.assert_close(flat(gradients, "transfer"), flat(reference, "transfer"), rtol=1e-10, atol=1e-12)


def test_unbiased_averaged_over_every_reservoir_draw_equals_bptt(uio, document, reference):
    """Algorithm R's draws at segments k = 2..5 (k in [0, k]): 3*4*5*6 = 360 equally likely sequences."""
    sequences = list(itertools.product(*(range(k + 1) for k in range(2, T))))
    assert len(sequences) == 360
    total = None
    for draws in sequences:
        gradient = flat(document_gradients(uio, document, "unbiased", window=2, draws=list(draws)))
        total = gradient if total is None else total + gradient
    torch.testing.assert_close(total / len(sequences), flat(reference), rtol=1e-9, atol=1e-12)
    single = document_gradients(uio, document, "unbiased", window=2, draws=[0, 0, 0, 0])
    assert relative_error(single, reference, "encoder") > 1e-3  # one draw is unbiased, not exact


def test_without_compensation_the_average_over_every_draw_is_biased(uio, document, reference):
    """The official train.py's gradient (no max(1, k/S)): averaged over all 120 draws (S = 3) it is not bptt's."""
    sequences = list(itertools.product(*(range(k + 1) for k in range(3, T))))
    assert len(sequences) == 120
    total = sum(
        flat(document_gradients(uio, document, "unbiased", window=3, draws=list(d), compensation=False))
        for d in sequences
    )
    average = total / len(sequences)
    error = float((average - flat(reference)).norm() / flat(reference).norm())
    assert error > 1e-3
    # the bias is in the encoder's gradient: old memories' gradients shrink; the transfer head's is exact
    transfer = [i for i, name in enumerate(sorted(reference)) if "transfer" in name]
    assert transfer and uio.STRATEGY_VARIANTS["unbiased-official"] == {"strategy": "unbiased", "compensation": False}
    official = uio.document_gradients(document, "unbiased-official", window=2, seed=0)
    torch.testing.assert_close(flat(official, "transfer"), flat(reference, "transfer"), rtol=1e-10, atol=1e-12)


def test_unbiased_without_evictions_equals_bptt(uio, document, reference):
    gradient = document_gradients(uio, document, "unbiased", window=T, draws=[])
    torch.testing.assert_close(flat(gradient), flat(reference))


def test_encoder_backward_passes(uio, document):
    """incremental and unbiased backpropagate each encoder graph once; tbptt once per (loss, kept graph)."""
    counts = {}
    for strategy, window in [("incremental", 2), ("unbiased", 2), ("tbptt", 2), ("tbptt", 4), ("bptt", 1)]:
        config = UIOTrainConfig(strategy=strategy, window=window)
        draws = reservoir_draws(draws=[2, 3, 0, 5])
        doc = run_document(uio.backbone, uio.adapters, document, SEGMENT, MEMORY, config, draws)
        counts[strategy, window] = doc.encoder_backwards
    encoded = T - 1  # the last segment has no later loss and is not encoded
    assert counts["incremental", 2] == encoded
    # draws 2, 3, 0, 5: segments 2 and 3 leave at once with no gradient (no pass); 0 is evicted by 4; 4 and 1 at the end
    assert counts["unbiased", 2] == 3
    assert counts["tbptt", 2] == sum(min(2, t) for t in range(1, T))
    assert counts["tbptt", 4] == sum(min(4, t) for t in range(1, T))
    assert counts["bptt", 1] == encoded


def test_seeded_draws_repeat_and_bad_draws_are_refused(uio, document):
    first = document_gradients(uio, document, "unbiased", window=1, seed=3)
    again = document_gradients(uio, document, "unbiased", window=1, seed=3)
    torch.testing.assert_close(flat(first), flat(again), rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be in"):
        document_gradients(uio, document, "unbiased", window=2, draws=[7, 0, 0, 0])
    with pytest.raises(ValueError, match="no reservoir draw left"):
        document_gradients(uio, document, "unbiased", window=2, draws=[0, 0])


def test_backward_document_accumulates_and_returns_the_mean_segment_loss(uio, document):
    expected_gradients = document_gradients(uio, document, "unbiased", window=2, seed=5)
    for parameter in uio.trainable_parameters():
        parameter.grad = None
    torch.manual_seed(5)  # backward_document draws from the global generator
    loss = uio.backward_document(document)
    with torch.no_grad():
        uio.reset()
        logprobs = uio.score(document)
    expected = torch.stack([-logprobs[t * SEGMENT : (t + 1) * SEGMENT - 1].mean() for t in range(1, T)]).mean()
    assert loss == pytest.approx(float(expected), abs=1e-5)
    named = dict(uio.adapters.named_parameters())
    for name, gradient in expected_gradients.items():
        got = named[name].grad
        torch.testing.assert_close(got if got is not None else torch.zeros_like(gradient), gradient, rtol=0, atol=0)


def test_fidelity_table_scores_exact_strategies_as_exact(uio, document):
    from harness.fidelity import fidelity, table

    rows = fidelity(uio, [document], ["incremental", "tbptt", "unbiased", "unbiased-official"], windows=[1, T], seeds=3)
    assert len(rows) == 2 + 2 + 2 * 3 + 2 * 3
    summary = table(rows).set_index(["strategy", "window"])
    assert summary.loc[("incremental", T), "cosine_mean"] == pytest.approx(1.0, abs=1e-12)
    assert summary.loc[("incremental", T), "relative_error_mean"] < 1e-9
    assert summary.loc[("tbptt", 1), "relative_error_mean"] > 1e-3
    assert summary.loc[("unbiased", 1), "runs"] == 3 and summary.loc[("unbiased", 1), "cosine_std"] > 0

"""`score()` is causal for every registered method: tokens after p never change a log-prob at or before p."""

from __future__ import annotations

import copy

import pytest
import torch

from methods.base import METHODS

# Options small enough that each method's memory, eviction and blocks are exercised on a few hundred
# tokens. A method registered later fails `test_every_method_has_causality_options` until it is here.
INFLLM_SMALL = dict(block_size=16, n_init=8, n_local=64, topk=2, repr_topk=2, max_cached_block=4, exc_block_size=32)
CAUSAL_OPTIONS = {
    "full": [{"chunk_size": 64}, {"rope_scaling": "yarn", "rope_factor": "auto"}],
    "streaming": [{"n_sink": 4, "window": 32, "chunk_size": 16}],
    "infllm": [{**INFLLM_SMALL, "chunk_size": 128}],
    "longlora": [
        {"lora_rank": 2, "lora_alpha": 4, "rope_factor": 2.0, "chunk_size": 64},
        {"lora_rank": 2, "lora_alpha": 4, "chunk_size": 24, "attention": "s2"},
    ],
    "rmt": [
        {"segment": 32, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
        {"segment": 32, "memory_tokens": 4, "trainable": "full"},
    ],
    "uio": [
        {"segment": 32, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
        {"segment": 32, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8, "memory": False},
    ],
}
LENGTH = 384
CASES = [(name, options) for name, table in CAUSAL_OPTIONS.items() for options in table]


@pytest.fixture(scope="module")
def tiny_float64(tiny_llama_gqa):
    model, tokenizer = tiny_llama_gqa
    return copy.deepcopy(model).double(), tokenizer


def build(name, loaded, options):
    cls = METHODS.get(name)
    method = cls(*loaded, cls.Config(**options))
    # Trained-looking adapters (LoRA B != 0), so a memory method's memory carries its segment.
    for parameter in getattr(method, "trainable_parameters", list)():
        with torch.no_grad():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)).double())
    return method


def test_every_method_has_causality_options():
    assert set(CAUSAL_OPTIONS) == set(METHODS.names())


@pytest.mark.parametrize(("name", "options"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_later_tokens_never_change_earlier_logprobs(name, options, seed, tiny_float64):
    method = build(name, tiny_float64, options)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (LENGTH,), generator=generator)
    method.reset()
    reference = method.score(ids)
    assert method.causal_score
    for p in (100, 196, 300):
        changed = ids.clone()
        changed[p + 1 :] = torch.randint(0, 256, (LENGTH - p - 1,), generator=generator)
        method.reset()
        out = method.score(changed)
        # out[i] is log p(x_{i+1} | x_<=i): indices below p are the tokens at or before p
        assert (out[:p] - reference[:p]).abs().max() <= 1e-9, f"position <= {p} moved"
        assert (out[p:] - reference[p:]).abs().max() > 1e-3  # the change itself is seen


def test_infllm_lookahead_option_is_not_causal_and_says_so(tiny_float64):
    """The official rule (a block's own mean query) leaks; the test above would catch it."""
    options = {**CAUSAL_OPTIONS["infllm"][0], "score_lookahead": True}
    method = build("infllm", tiny_float64, options)
    assert not method.causal_score
    ids = torch.randint(0, 256, (LENGTH,), generator=torch.Generator().manual_seed(0))
    reference = method.score(ids)
    leaks = []
    for p in range(96, 320, 32):  # execution blocks of 32 after the first blocks exist
        changed = ids.clone()
        changed[p + 16 :] = (changed[p + 16 :] + 1) % 256
        method.reset()
        leaks.append(float((method.score(changed)[: p + 15] - reference[: p + 15]).abs().max()))
    assert max(leaks) > 1e-6


def test_infllm_prefill_keeps_the_official_lookahead(tiny_float64):
    """Prefill retrieves with the execution block's own mean query (a prompt is fully known): it differs from score."""
    method = build("infllm", tiny_float64, CAUSAL_OPTIONS["infllm"][0])
    lookahead = build("infllm", tiny_float64, {**CAUSAL_OPTIONS["infllm"][0], "score_lookahead": True})
    ids = torch.randint(0, 256, (LENGTH,), generator=torch.Generator().manual_seed(2))
    method.prefill(ids)
    lookahead.score(ids)
    causal_logits = method.next_logits.clone()
    method.reset()
    method.score(ids)
    torch.testing.assert_close(lookahead.next_logits, causal_logits, rtol=0, atol=0)
    assert (method.next_logits - causal_logits).abs().max() > 1e-6

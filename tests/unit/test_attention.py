"""`causal_attention` of a chunk over earlier keys equals a naive masked softmax, whichever kernel path it takes."""

from __future__ import annotations

import pytest
import torch
from cases import naive_attention

from methods import attention, flops


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Float64 softmax over every key, the keys after each query's own position masked (bottom-right aligned)."""
    t, s = q.shape[2], k.shape[2]
    seen = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    return naive_attention(q.double(), k.double(), v.double(), seen, scale)


@pytest.fixture
def flash_calls(monkeypatch):
    """Counts calls of the CPU flash kernel the split path uses."""
    if attention._CPU_FLASH is None:
        pytest.skip("this torch has no CPU flash kernel")
    calls, kernel = [], attention._CPU_FLASH

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(attention, "_CPU_FLASH", counted)
    return calls


def chunk(dtype: torch.dtype, t: int, s: int, heads: int = 6, kv_heads: int = 2):
    g = torch.Generator().manual_seed(t * 1000 + s)
    q = torch.randn(1, heads, t, 16, generator=g).to(dtype)
    k, v = (torch.randn(1, kv_heads, s, 16, generator=g).to(dtype) for _ in range(2))
    return q, k, v


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
# split in two calls (the earlier keys, then the chunk's own) where the earlier keys are at least the chunk's
@pytest.mark.parametrize(("t", "s", "calls"), [(5, 12, 2), (300, 700, 2), (2, 4, 2), (300, 400, 0)])
def test_chunk_attention_is_the_masked_softmax(flash_calls, dtype, atol, t, s, calls):
    q, k, v = chunk(dtype, t, s)
    with torch.no_grad():
        out = attention.causal_attention(q, k, v, 0.25)
    assert len(flash_calls) == calls
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), naive(q, k, v, 0.25), atol=atol, rtol=0)


def test_with_gradients_the_masked_blocks_run_and_match_the_naive_gradient(flash_calls):
    q, k, v = (x.requires_grad_() for x in chunk(torch.float64, 300, 700))
    out = attention.causal_attention(q, k, v, 0.25)
    assert not flash_calls  # the log-sum-exp the split merges by has no gradient
    ref = naive(q, k, v, 0.25)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for got, want in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_split_counts_the_pairs_the_masked_blocks_count(flash_calls, monkeypatch):
    q, k, v = chunk(torch.float32, 300, 700)
    seen = {}
    for split in (False, True):
        monkeypatch.setattr(attention, "SPLIT_ON_CPU", split)
        with torch.no_grad(), flops.counting(flops.Ledger()) as ledger:
            attention.causal_attention(q, k, v, 0.25)
        seen[split] = ledger.attention
    assert len(flash_calls) == 2
    assert seen[True] == pytest.approx(seen[False], rel=1e-12) and seen[True] > 0

"""Shared attention kernels: RoPE application, GQA expansion, causal SDPA with bottom-right alignment."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from methods import flops


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE in float32 or wider and cast back (bf16 trig loses positions past a few thousand).

    Args:
        x: `[B, H, T, d]` queries or keys.
        cos: `[T, d]` or `[B, T, d]` float32 table from `Backbone.rope`.
        sin: same shape as `cos`.

    """
    if cos.dim() == 2:
        cos, sin = cos[None, None], sin[None, None]
    else:
        cos, sin = cos[:, None], sin[:, None]
    x32 = x if x.dtype == torch.float64 else x.float()
    half = x32.shape[-1] // 2
    # x * cos + rotate_half(x) * sin, without materialising rotate_half (3 passes over x instead of 5)
    out = x32 * cos.to(x32.dtype)
    sin = sin.to(x32.dtype)
    out[..., :half].addcmul_(x32[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x32[..., :half], sin[..., half:])
    return out.to(x.dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`[B, Hkv, S, d]` -> `[B, Hkv * n_rep, S, d]` so each query head has its KV head (GQA)."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)


# SDPA shares K/V heads across query groups itself from torch 2.5 (`enable_gqa`); older torch gets copies.
_NATIVE_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seen_dim: int | None = None, **kwargs) -> torch.Tensor:
    """`F.scaled_dot_product_attention` with GQA: `[B, H, T, d]` queries over `[B, Hkv, S, d]` keys/values.

    Materialising the repeated K/V costs a copy of the whole cache per layer and per decoded token,
    which made decoding 4.5x slower than transformers at 16K; SDPA's `enable_gqa` avoids it.
    `seen_dim`: the model's head size, for the FLOP count, when the caller pads heads (`methods.flops`).
    """
    flops.sdpa_call(q, k, kwargs.get("attn_mask"), kwargs.get("is_causal", False), seen_dim)
    if q.shape[1] == k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    if not _NATIVE_GQA:
        n_rep = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), **kwargs)
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)


# Chunked prefill attends a chunk of T queries over S > T keys with an explicit mask, which SDPA cannot
# skip the masked upper triangle of (T^2/2 wasted pairs: 25% of the attention at 4K with 2K chunks).
# Query blocks of this size, each over the keys it can see, bound the waste to S * QUERY_BLOCK / 2.
QUERY_BLOCK = 256

# On CPU, SDPA's flash kernel also returns each row's log-sum-exp, so a chunk's attention splits exactly into
# the earlier keys (no mask) and its own keys (causal, half skipped), merged by those sums: no mask to read
# and no masked pair computed, 1.25x faster than the masked blocks for a 2,048-token chunk over 8K-32K keys.
# Where the earlier keys are fewer than the chunk's own (UIO's memory before its block) the masked blocks
# stay: split, UIO's 8K prefill took 25.1 s against 23.0 (runs vary by about 5 %). The log-sum-exp has no
# gradient, so training keeps the masked blocks. `prefill_before_after.py` switches SPLIT_ON_CPU off.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
SPLIT_ON_CPU = True


@functools.lru_cache(maxsize=32)
def bottom_right_mask(t: int, s: int, device: torch.device) -> torch.Tensor:
    """`[t, s]` bool causal mask of the last `t` positions over `s` keys; cached because every layer asks."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of the last `T` positions over all `S >= T` keys (bottom-right aligned).

    `is_causal=True` in SDPA aligns the mask top-left when `T < S`, which is wrong for chunked prefill
    and decoding over a cache; so an explicit mask is built then (once for all layers), per block of
    `QUERY_BLOCK` queries over the keys they can see.

    Args:
        q: `[B, H, T, d]` rotated queries.
        k: `[B, Hkv, S, d]` rotated keys, the last `T` of which belong to the queries.
        v: `[B, Hkv, S, d]` values.
        scale: softmax scale, `head_dim ** -0.5` for Llama.

    """
    t, s = q.shape[2], k.shape[2]
    if t == s:
        return sdpa(q, k, v, is_causal=True, scale=scale)
    if t == 1:
        return sdpa(q, k, v, scale=scale)
    if s - t >= t and _splits(q, k, v):
        return _earlier_then_own(q, k, v, scale)
    out = []
    for start in range(0, t, QUERY_BLOCK):
        stop = min(t, start + QUERY_BLOCK)
        seen = s - t + stop
        mask = bottom_right_mask(stop - start, seen, q.device)
        out.append(sdpa(q[:, :, start:stop], k[:, :, :seen], v[:, :, :seen], attn_mask=mask, scale=scale))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


def _splits(*tensors: torch.Tensor) -> bool:
    """Whether `causal_attention` can take the exact split: CPU, the flash kernel present, no gradient wanted."""
    wants_grad = torch.is_grad_enabled() and any(x.requires_grad for x in tensors)
    return SPLIT_ON_CPU and _CPU_FLASH is not None and tensors[0].device.type == "cpu" and not wants_grad


def _earlier_then_own(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """`causal_attention` of `T < S` queries split at their own keys, merged exactly.

    The attention over the `S - T` earlier keys (unmasked) and over the chunk's own `T` keys (causal) are
    weighted by each part's log-sum-exp: the same softmax over all keys.
    """
    b, h, t, d = q.shape
    kv_heads, early = k.shape[1], k.shape[2] - t
    flops.sdpa_call(q, k[:, :, :early])
    flops.sdpa_call(q, k[:, :, early:], is_causal=True)
    # The query heads that share a KV head, stacked along T, read the earlier keys in one call without copies.
    before, before_lse = _CPU_FLASH(q.reshape(b, kv_heads, -1, d), k[:, :, :early], v[:, :, :early], scale=scale)
    n_rep = h // kv_heads
    own, own_lse = _CPU_FLASH(
        q, repeat_kv(k[:, :, early:], n_rep), repeat_kv(v[:, :, early:], n_rep), is_causal=True, scale=scale
    )
    before_lse = before_lse.reshape(b, h, t)
    total = torch.logaddexp(before_lse, own_lse)
    merged = before.reshape(b, h, t, d) * (before_lse - total).exp_()[..., None]
    return merged.addcmul_(own, (own_lse - total).exp_()[..., None]).to(q.dtype)

"""UIO-LLMs attention kernels: compression attention (encoder) and memory-prefixed decoder attention.

Each has a pure-torch SDPA path (CPU and any GPU) and a fast GPU path: flash-attn when installed
(decoder only; its causal mask is bottom-right aligned since flash-attn 2.1), else SDPA restricted to
the flash / memory-efficient backends. Tests compare both with a naive masked softmax.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

from methods import flops
from methods.attention import causal_attention, repeat_kv, sdpa


@functools.lru_cache(maxsize=16)
def compression_mask(segment: int, memory_tokens: int, device: torch.device) -> torch.Tensor:
    """`[l+m, l+m]` bool mask of the encoder (True = may attend).

    Text token i sees text 0..i; `<mem>` slot j sees text 0..(j+1)*l/m - 1 and itself, nothing else.
    """
    size, span = segment + memory_tokens, segment // memory_tokens
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:segment, :segment] = torch.ones(segment, segment, dtype=torch.bool).tril()
    for slot in range(memory_tokens):
        mask[segment + slot, : (slot + 1) * span] = True
        mask[segment + slot, segment + slot] = True
    return mask.to(device)


def compression_positions(segment: int, memory_tokens: int) -> torch.Tensor:
    """`[l+m]` RoPE positions in the encoder: text 0..l-1, `<mem>` slot j at (j+1)*l/m."""
    span = segment // memory_tokens
    return torch.cat([torch.arange(segment), torch.arange(1, memory_tokens + 1) * span])


def compression_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, memory_tokens: int, scale: float
) -> torch.Tensor:
    """Encoder attention over `[segment ; <mem> x m]` with the compression mask.

    Args:
        q: `[B, H, l+m, d]` rotated queries (B = segments encoded together).
        k: `[B, Hkv, l+m, d]` rotated keys.
        v: `[B, Hkv, l+m, d]` values.
        memory_tokens: m.
        scale: softmax scale.

    Returns:
        `[B, H, l+m, d]`.
    """
    mask = compression_mask(q.shape[2] - memory_tokens, memory_tokens, q.device)
    if q.is_cuda:  # flash cannot take this mask; the memory-efficient kernel can, with K/V heads repeated
        n_rep = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return sdpa(q, k, v, attn_mask=mask, scale=scale)


def has_flash_attn() -> bool:
    """True when the optional `flash-attn` package is installed."""
    return importlib.util.find_spec("flash_attn") is not None


def decoder_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, fast: bool | None = None
) -> torch.Tensor:
    """Queries of the current block over `[memory ; raw cache ; block]`, causal with bottom-right alignment.

    Args:
        q: `[B, H, T, d]` rotated queries (the last T positions).
        k: `[B, Hkv, S, d]` rotated keys, S >= T.
        v: `[B, Hkv, S, d]` values.
        scale: softmax scale.
        fast: use the GPU path (flash-attn, else SDPA flash/efficient); None = when `q` is on CUDA.

    Returns:
        `[B, H, T, d]`.
    """
    fast = q.is_cuda if fast is None else fast
    if not fast:
        return causal_attention(q, k, v, scale)
    if has_flash_attn() and q.dtype in (torch.float16, torch.bfloat16):
        from flash_attn import flash_attn_func

        flops.sdpa_call(q, k, is_causal=True)
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
        return out.transpose(1, 2)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    n_rep = q.shape[1] // k.shape[1]
    bias = causal_lower_right(q.shape[2], k.shape[2])
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), attn_mask=bias, scale=scale)

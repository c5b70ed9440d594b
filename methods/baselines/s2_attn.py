"""LongLoRA's S²-Attn (shifted sparse attention), the fine-tuning-only attention pattern (Chen et al., 2023).

Paper: https://arxiv.org/abs/2309.12307; official code https://github.com/dvlab-research/LongLoRA
(`llama_attn_replace.py`). Spec: `shared/research/baselines.md` §3.1.

The sequence is cut into groups of `G` tokens and attention is causal inside each group only. The first
half of the heads use the groups `[0, G), [G, 2G), …`; the others use the same groups shifted by `G/2`, so
information crosses group boundaries through the shifted half. Upstream ran only even head counts. With an
odd number (SmolLM2's 9) lch keeps the larger half, `ceil(H/2)`, unshifted: the official flash path has no
counterpart (it reshapes the heads to `(2, H // 2)`, which fails for an odd `H`), and its non-flash path
shifts the heads from `H // 2` on, the larger half. Two official variants differ:

- `rolled=False` (default; the official flash path, `forward_flashattn`): the shifted groups are
  `[0, G/2), [G/2, 3G/2), …, [N - G/2, N)`. No token ever sees a later one.
- `rolled=True` (the official non-flash path, `forward_noflashattn`): the shifted heads' q, k, v are
  rolled by `-G/2`, grouped, and the output rolled back. The last group is then `[N - G/2, N)` followed
  by `[0, G/2)`, so tokens `0..G/2-1` attend to the last `G/2` tokens: a future-context leak in half of
  the heads, which the maintainers call intentional (LongLoRA issue #15). Kept only as a fidelity flag.

q, k and v arrive rotated at their absolute positions (RoPE before shifting, as upstream). The flash-attn
varlen path is not implemented: grouped SDPA already runs each group as a dense causal block.

`s2_cached_attention` is the same pattern (default variant) for queries that arrive in chunks over a KV
cache: S²-Attn at inference, which the maintainers do not use (LongLoRA evaluates with full attention)
and lch runs only when asked.
"""

from __future__ import annotations

import torch

from methods.attention import repeat_kv, sdpa


def group_size(length: int, ratio: float = 0.25) -> int:
    """Official group size `int(N * ratio)` (`group_size_ratio = 1/4` upstream), rounded down to even, >= 2.

    The shifted half needs `G/2` to be a whole number of tokens, hence even. Upstream does not round: its
    training lengths are powers of two, where `int(N / 4)` is already even.
    """
    if length < 1 or ratio <= 0:
        raise ValueError(f"need length >= 1 and ratio > 0, got length={length}, ratio={ratio}")
    return max(2, int(length * ratio) // 2 * 2)


def _causal_groups(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first: int, group: int, scale: float
) -> torch.Tensor:
    """Causal attention inside the groups `[0, first), [first, first + G), …`, the last one possibly partial.

    Full groups run as one batched SDPA call over `[B * n_groups, h, G, d]`; the short first and last
    groups run as their own causal calls. That is exactly "pad to whole groups with masked keys and drop
    the padded query rows", without materialising a mask or padding.

    Args:
        q: `[B, h, N, d]` queries.
        k: `[B, hkv, N, d]` keys (`h` a multiple of `hkv`).
        v: `[B, hkv, N, d]` values.
        first: length of the first group, `0` when it is a full one.
        group: `G`, length of every other group.
        scale: softmax scale.

    Returns:
        `[B, h, N, d]` outputs.

    """
    n = q.shape[2]
    first = min(first, n)
    n_full = (n - first) // group
    stop = first + n_full * group
    out = []
    if first:
        out.append(sdpa(q[:, :, :first], k[:, :, :first], v[:, :, :first], is_causal=True, scale=scale))
    if n_full:

        def grouped(x: torch.Tensor) -> torch.Tensor:  # [B, h, n_full * G, d] -> [B * n_full, h, G, d]
            b, h, _, d = x.shape
            return x[:, :, first:stop].unflatten(2, (n_full, group)).transpose(1, 2).reshape(b * n_full, h, group, d)

        o = sdpa(grouped(q), grouped(k), grouped(v), is_causal=True, scale=scale)
        b, h, _, d = q.shape
        out.append(o.view(b, n_full, h, group, d).transpose(1, 2).reshape(b, h, n_full * group, d))
    if stop < n:
        out.append(sdpa(q[:, :, stop:], k[:, :, stop:], v[:, :, stop:], is_causal=True, scale=scale))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


def _halves(n_heads: int, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """`(h, hkv, k, v)`: query heads `:h` are the plain half, and they use KV heads `:hkv` of the returned k, v.

    When the split falls inside a KV head's group of query heads, that KV head serves both halves, so
    K/V are expanded to one head per query head first (upstream always expands).
    """
    per_kv = n_heads // k.shape[1]
    h = (n_heads + 1) // 2
    if h % per_kv:
        k, v, per_kv = repeat_kv(k, per_kv), repeat_kv(v, per_kv), 1
    return h, h // per_kv, k, v


def s2_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float, rolled: bool = False
) -> torch.Tensor:
    """Shifted sparse attention over a whole sequence (training-time self-attention, no cache).

    `N` need not be a multiple of `G` in the default variant: the last group of each half is shorter,
    as if padded with keys nobody attends to. When `G >= 2N` both halves hold a single group and the
    result is plain causal attention; with `N <= G < 2N` only the unshifted half is.

    GQA: query head `i` uses KV head `i // (H / Hkv)` as in `repeat_kv` (see `_halves`).

    Args:
        q: `[B, H, N, d]` queries rotated at positions `0..N-1`.
        k: `[B, Hkv, N, d]` keys rotated at the same positions; `H` a multiple of `Hkv`.
        v: `[B, Hkv, N, d]` values.
        group: `G`, tokens per group, positive and even (see `group_size`).
        scale: softmax scale, `head_dim ** -0.5` for Llama.
        rolled: use the official non-flash variant (wrap-around leak, see the module docstring). It
            needs `N % G == 0`, as upstream, since rolling a partial group has no official meaning.

    Returns:
        `[B, H, N, d]` outputs, heads in the input order.

    """
    n_heads, n_kv, n = q.shape[1], k.shape[1], q.shape[2]
    if group < 2 or group % 2:
        raise ValueError(f"group must be a positive even number of tokens, got {group}")
    if n_heads < 2 or n_heads % n_kv:
        raise ValueError(f"need at least 2 query heads, a multiple of the KV heads; got H={n_heads}, Hkv={n_kv}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2] != n:
        raise ValueError(f"k, v must be [B, Hkv, N, d] for q {tuple(q.shape)}; got {tuple(k.shape)}, {tuple(v.shape)}")
    if rolled and n % group:
        raise ValueError(f"rolled=True needs the length to be a multiple of the group: N={n}, G={group}")
    h, hkv, k, v = _halves(n_heads, k, v)
    half = group // 2

    plain = _causal_groups(q[:, :h], k[:, :hkv], v[:, :hkv], 0, group, scale)
    q2, k2, v2 = q[:, h:], k[:, hkv:], v[:, hkv:]
    if rolled:
        q2, k2, v2 = (x.roll(-half, dims=2) for x in (q2, k2, v2))
        shifted = _causal_groups(q2, k2, v2, 0, group, scale).roll(half, dims=2)
    else:
        shifted = _causal_groups(q2, k2, v2, half, group, scale)
    return torch.cat([plain, shifted], dim=1)


def group_starts(positions: torch.Tensor, group: int, shifted: bool) -> torch.Tensor:
    """First position of the group each query position is in: `[0, G), [G, 2G), …` or the shifted `[0, G/2), …`."""
    if not shifted:
        return positions // group * group
    half = group // 2
    return ((positions + half) // group * group - half).clamp(min=0)


def s2_cached_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, group: int, scale: float
) -> torch.Tensor:
    """S²-Attn (default variant, no wrap-around) of queries at `positions` over a cache of keys `0..S-1`.

    Equals `s2_attention` over the whole sequence however it is cut into chunks. Positions past the
    length the group was sized for continue the same groups.

    Args:
        q: `[B, H, T, d]` rotated queries at `positions` (the last `T` of the cache's positions).
        k: `[B, Hkv, S, d]` rotated keys at positions `0..S-1`.
        v: `[B, Hkv, S, d]` values.
        positions: `[T]` positions of the queries.
        group: `G`, positive and even.
        scale: softmax scale.

    Returns:
        `[B, H, T, d]` outputs.

    """
    n_heads = q.shape[1]
    if group < 2 or group % 2:
        raise ValueError(f"group must be a positive even number of tokens, got {group}")
    h, hkv, k, v = _halves(n_heads, k, v)
    out = []
    for heads, kv_heads, shifted in ((slice(0, h), slice(0, hkv), False), (slice(h, None), slice(hkv, None), True)):
        starts = group_starts(positions, group, shifted)
        first = int(starts.min())  # keys before every query's group are never seen: leave them out
        keys = torch.arange(first, k.shape[2], device=k.device)
        seen = (keys[None] >= starts[:, None]) & (keys[None] <= positions[:, None])
        out.append(sdpa(q[:, heads], k[:, kv_heads, first:], v[:, kv_heads, first:], attn_mask=seen, scale=scale))
    return torch.cat(out, dim=1)

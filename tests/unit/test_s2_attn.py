"""S²-Attn against a naive float64 reference: a full `[N, N]` score matrix per head with a mask from group ids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from methods.baselines.s2_attn import group_size, s2_attention, s2_cached_attention

B, H, D = 2, 4, 8
SCALE = D**-0.5
TIGHT = dict(rtol=1e-10, atol=1e-10)


def inputs(n, n_kv=H, dtype=torch.float64, seed=0):
    """q, k, v in the backbone's layout: `[B, N, heads, d]` transposed, so not contiguous."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, n, heads, D, generator=g, dtype=dtype).transpose(1, 2) for heads in (H, n_kv, n_kv))
    return q, k, v


def visible(n, group, shifted, rolled=False):
    """`[N, N]` bool: query i sees key j iff same group and j not after i, both in the half's coordinates."""
    i = torch.arange(n)
    if not shifted:
        order = i
        gid = i // group
    elif rolled:
        order = (i - group // 2) % n  # token i sits at this index of the sequence rolled by -G/2
        gid = order // group
    else:
        order = i
        gid = (i + group // 2) // group
    return (gid[:, None] == gid[None, :]) & (order[None, :] <= order[:, None])


def reference(q, k, v, group, rolled=False):
    """`[B, H, N, d]` float64 softmax(q k^T * scale, masked) v, one head at a time."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    n = q.shape[2]
    heads = []
    for head in range(q.shape[1]):
        mask = visible(n, group, shifted=head >= (q.shape[1] + 1) // 2, rolled=rolled)
        scores = (q[:, head] @ k[:, head].transpose(-1, -2) * SCALE).masked_fill(~mask, float("-inf"))
        heads.append(scores.softmax(-1) @ v[:, head])
    return torch.stack(heads, dim=1)


def test_reference_groups_follow_the_spec():
    """The reference's masks, by hand for N=8, G=4 (spec: baselines.md §3.1)."""

    def groups(mask):  # mask | mask.T drops the causal order: each row lists the members of its group
        same = mask | mask.T
        return sorted({tuple(torch.nonzero(row).flatten().tolist()) for row in same})

    assert groups(visible(8, 4, shifted=False)) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert groups(visible(8, 4, shifted=True)) == [(0, 1), (2, 3, 4, 5), (6, 7)]
    assert groups(visible(8, 4, shifted=True, rolled=True)) == [(0, 1, 6, 7), (2, 3, 4, 5)]
    # Rolled order inside the wrapped group is 6, 7, 0, 1: token 0 sees 6 and 7, token 7 does not see 0.
    wrapped = visible(8, 4, shifted=True, rolled=True)
    assert wrapped[0, 6] and wrapped[0, 7] and not wrapped[7, 0] and wrapped[1, 0]


CASES = [  # (N, G, rolled)
    (16, 4, False),
    (16, 4, True),
    (16, 8, True),
    (18, 4, False),  # N % G == 2: partial last groups in both halves
    (13, 6, False),  # odd N
    (5, 4, False),  # G/2 < N < G
    (3, 8, False),  # N < G/2: one group per half
]


@pytest.mark.parametrize("n_kv", [H, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize(("n", "group", "rolled"), CASES)
def test_matches_reference_per_half(n, group, rolled, n_kv):
    q, k, v = inputs(n, n_kv)
    out = s2_attention(q, k, v, group, SCALE, rolled=rolled)
    ref = reference(q, k, v, group, rolled=rolled)
    assert out.shape == (B, H, n, D)
    torch.testing.assert_close(out[:, : H // 2], ref[:, : H // 2], **TIGHT, msg="unshifted heads")
    torch.testing.assert_close(out[:, H // 2 :], ref[:, H // 2 :], **TIGHT, msg="shifted heads")


def causal(q, k, v):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=SCALE)


@pytest.mark.parametrize("n_kv", [H, 2])
def test_one_group_per_half_is_causal_attention(n_kv):
    """G >= 2N: the unshifted group [0, G) and the shifted first group [0, G/2) both cover the sequence."""
    n = 10
    q, k, v = inputs(n, n_kv)
    torch.testing.assert_close(s2_attention(q, k, v, 2 * n, SCALE), causal(q, k, v), **TIGHT)


def test_group_of_n_is_causal_only_in_the_unshifted_half():
    """G = N: the shifted half still splits at N/2, so it must differ from causal attention there."""
    n = 10
    q, k, v = inputs(n)
    out, full = s2_attention(q, k, v, n, SCALE), causal(q, k, v)
    torch.testing.assert_close(out[:, : H // 2], full[:, : H // 2], **TIGHT)
    torch.testing.assert_close(out[:, H // 2 :, : n // 2], full[:, H // 2 :, : n // 2], **TIGHT)
    assert (out[:, H // 2 :, n // 2 :] - full[:, H // 2 :, n // 2 :]).abs().amax() > 1e-3


@pytest.mark.parametrize(("n", "group"), [(14, 4), (16, 4)])
def test_default_variant_is_causal(n, group):
    """Changing k/v (and q) after p leaves every output at positions <= p unchanged, in all heads."""
    q, k, v = inputs(n, n_kv=2)
    out = s2_attention(q, k, v, group, SCALE)
    for p in range(n - 1):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, p + 1 :] += 10 * torch.randn_like(x[:, :, p + 1 :])
        out2 = s2_attention(q2, k2, v2, group, SCALE)
        torch.testing.assert_close(out2[:, :, : p + 1], out[:, :, : p + 1], **TIGHT, msg=f"p={p}")


@pytest.mark.parametrize("rolled", [False, True])
def test_rolled_variant_leaks_the_last_half_group_into_the_first(rolled):
    """Only the rolled variant lets tokens 0..G/2-1 of the shifted heads see the last G/2 tokens."""
    n, group = 16, 4
    q, k, v = inputs(n, n_kv=2)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, n - group // 2 :] += 10
    v2[:, :, n - group // 2 :] += 10
    out = s2_attention(q, k, v, group, SCALE, rolled=rolled)
    out2 = s2_attention(q, k2, v2, group, SCALE, rolled=rolled)
    torch.testing.assert_close(out2[:, : H // 2, 0], out[:, : H // 2, 0], **TIGHT)
    leak = (out2[:, H // 2 :, : group // 2] - out[:, H // 2 :, : group // 2]).abs().amax()
    if rolled:
        assert leak > 1e-3
    else:
        assert leak == 0


@pytest.mark.parametrize(("n", "group", "rolled", "n_kv"), [(16, 4, True, 2), (13, 6, False, 2), (12, 4, False, 1)])
def test_gradients_match_reference(n, group, rolled, n_kv):
    q, k, v = (x.detach().requires_grad_() for x in inputs(n, n_kv))
    upstream = torch.randn(B, H, n, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = torch.autograd.grad((s2_attention(q, k, v, group, SCALE, rolled=rolled) * upstream).sum(), (q, k, v))
    expected = torch.autograd.grad((reference(q, k, v, group, rolled=rolled) * upstream).sum(), (q, k, v))
    for name, got, want in zip("qkv", grads, expected, strict=True):
        assert torch.isfinite(got).all(), name
        assert want.abs().amax() > 0, name
        torch.testing.assert_close(got, want, **TIGHT, msg=f"d{name}")


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_is_close_to_float64(dtype, tol):
    q, k, v = inputs(18, n_kv=2, dtype=dtype)
    out = s2_attention(q, k, v, 4, SCALE)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), reference(q, k, v, 4), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("n", "group", "rolled", "n_heads", "n_kv"),
    [
        (16, 3, False, 4, 4),  # odd group
        (16, 0, False, 4, 4),
        (18, 4, True, 4, 4),  # rolled needs N % G == 0
        (16, 4, False, 1, 1),  # one head cannot be split
        (16, 4, False, 4, 3),  # H not a multiple of Hkv
    ],
)
def test_bad_arguments_raise(n, group, rolled, n_heads, n_kv):
    q = torch.zeros(1, n_heads, n, D)
    k = v = torch.zeros(1, n_kv, n, D)
    with pytest.raises(ValueError):
        s2_attention(q, k, v, group, SCALE, rolled=rolled)


def test_group_size():
    assert group_size(4096) == 1024
    assert group_size(100) == 24  # int(25) rounded down to even
    assert group_size(8192, ratio=1 / 8) == 1024
    assert group_size(3) == 2
    with pytest.raises(ValueError):
        group_size(100, ratio=0)


@pytest.mark.parametrize("n_kv", [H, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("chunk", [1, 3, 5, 18])
@pytest.mark.parametrize(("n", "group"), [(16, 4), (18, 4), (13, 6), (5, 4), (3, 8)])
def test_cached_matches_reference_in_any_chunks(n, group, chunk, n_kv):
    """Inference S²-Attn over a growing cache: chunk by chunk (one token = decoding), the reference's rows."""
    q, k, v = inputs(n, n_kv)
    pieces = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        positions = torch.arange(start, stop)
        pieces.append(s2_cached_attention(q[:, :, start:stop], k[:, :, :stop], v[:, :, :stop], positions, group, SCALE))
    torch.testing.assert_close(torch.cat(pieces, dim=2), reference(q, k, v, group), **TIGHT)


def test_cached_with_one_group_per_half_is_causal_attention():
    """G >= 2N: every query sees every earlier key in both halves."""
    q, k, v = inputs(10)
    out = s2_cached_attention(q[:, :, 6:], k, v, torch.arange(6, 10), 20, SCALE)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=SCALE)[:, :, 6:]
    torch.testing.assert_close(out, full, **TIGHT)


@pytest.mark.parametrize(("n_heads", "n_kv"), [(9, 3), (9, 9), (9, 1), (5, 5)], ids=["smollm2", "mha9", "mqa9", "mha5"])
def test_odd_head_counts_put_the_larger_half_in_plain_groups(n_heads, n_kv):
    """SmolLM2-135M has 9 query heads over 3 KV heads: heads 0-4 plain, 5-8 shifted (torch.chunk's split)."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, heads, 18, D, generator=g, dtype=torch.float64) for heads in (n_heads, n_kv, n_kv))
    expected = reference(q, k, v, 4)
    torch.testing.assert_close(s2_attention(q, k, v, 4, SCALE), expected, **TIGHT)
    cached = []
    for i in range(0, 18, 5):
        positions = torch.arange(i, min(18, i + 5))
        cached.append(s2_cached_attention(q[:, :, i : i + 5], k[:, :, : i + 5], v[:, :, : i + 5], positions, 4, SCALE))
    torch.testing.assert_close(torch.cat(cached, dim=2), expected, **TIGHT)

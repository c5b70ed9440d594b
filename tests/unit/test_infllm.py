"""InfLLM against a naive reference attention; its parts (representative keys, retrieval, offload) by hand."""

from __future__ import annotations

import pytest
import torch

from methods.attention import repeat_kv, rotate
from methods.backbone import Backbone
from methods.base import METHODS
from methods.baselines.infllm import InfLLMConfig
from methods.baselines.infllm_blocks import BlockStore, representative_key

# Retrieval on, small enough for 150 tokens to fill blocks: 4 initial tokens, a 16-token window, blocks of 4.
SMALL = dict(n_local=16, n_init=4, block_size=4, repr_topk=2, exc_block_size=8, chunk_size=20)


def infllm(loaded, **options):
    cls = METHODS.get("infllm")
    return cls(*loaded, cls.Config(**options))


def ids_of(n, seed=0):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


class ClampedReference:
    """InfLLM's position rule with every past token attended: query `p` sees key `j <= p` at relative position
    `min(p - j, n_local - 1)`, one query at a time, K/V kept whole."""

    def __init__(self, backbone, n_local):
        self.backbone, self.n_local = backbone, n_local
        self.k, self.v = {}, {}

    def attend(self, layer, q, k, v, positions):
        keys = torch.cat([self.k[layer], k], dim=2) if layer in self.k else k
        values = torch.cat([self.v[layer], v], dim=2) if layer in self.v else v
        self.k[layer], self.v[layer] = keys, values
        rep = q.shape[1] // k.shape[1]
        keys, values = repeat_kv(keys, rep), repeat_kv(values, rep)
        first = keys.shape[2] - q.shape[2]
        out = []
        for i in range(q.shape[2]):
            p = first + i
            distance = (p - torch.arange(p + 1)).clamp(max=self.n_local - 1)
            cos, sin = self.backbone.rope(distance)
            rotated_q = rotate(q[:, :, i : i + 1].expand(-1, -1, p + 1, -1), cos, sin)
            logits = (rotated_q * keys[:, :, : p + 1]).sum(-1) * self.backbone.scale
            out.append(torch.softmax(logits, dim=-1)[:, :, None] @ values[:, :, : p + 1])
        return torch.cat(out, dim=2)


def reference_hidden_logits(loaded, ids, n_local):
    """`[T, V]` logits of the reference model at every position."""
    backbone = Backbone(loaded[0])
    hidden = backbone(backbone.embed(ids[None]), torch.arange(ids.numel()), ClampedReference(backbone, n_local))
    return backbone.logits(hidden[0])


def reference_logprobs(loaded, ids, n_local):
    logits = reference_hidden_logits(loaded, ids, n_local)[:-1]
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[1:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def tiny_gqa_f64(tiny_llama_gqa):
    model, tokenizer = tiny_llama_gqa
    import copy

    return copy.deepcopy(model).double(), tokenizer


# execution blocks over QUERY_ROWS queries are attended in steps; 150 tokens cover the small config
WIDE = dict(n_local=200, n_init=8, block_size=16, repr_topk=2, exc_block_size=160, chunk_size=300)


@pytest.mark.parametrize(
    ("options", "length"),
    [({**SMALL, "chunk_size": 20}, 150), ({**SMALL, "chunk_size": 7}, 150), ({**SMALL, "chunk_size": 150}, 150),
     (WIDE, 560)],
)  # fmt: skip
def test_all_blocks_retrieved_equals_clamped_reference(options, length, tiny_gqa_f64):
    """topk >= number of blocks: every past token is attended once, at min(true distance, n_local - 1)."""
    ids = ids_of(length)
    method = infllm(tiny_gqa_f64, **options, topk=64, max_cached_block=64)
    got = method.score(ids)
    assert method.attention.block_count > 15  # blocks, initial tokens and remainder all in play
    assert method.attention.init_length == options["n_init"]
    reference = reference_logprobs(tiny_gqa_f64, ids, n_local=options["n_local"])
    # float64 model; score() returns float32 log-probs, so agreement is to float32 rounding
    torch.testing.assert_close(got, reference.float(), rtol=0, atol=5e-6)


def test_window_over_the_input_equals_full_attention(tiny_gqa_f64):
    ids = ids_of(120)
    method = infllm(tiny_gqa_f64, n_local=128, exc_block_size=32, chunk_size=50)
    full = METHODS.get("full")(*tiny_gqa_f64, METHODS.get("full").Config())
    torch.testing.assert_close(method.score(ids), full.score(ids), rtol=0, atol=5e-6)


def test_retrieval_of_fewer_blocks_differs_from_the_reference(tiny_gqa_f64):
    """With topk below the number of blocks, some of the past is left out: the reference no longer holds."""
    ids = ids_of(150)
    got = infllm(tiny_gqa_f64, **SMALL, topk=2, max_cached_block=2).score(ids)
    assert (got - reference_logprobs(tiny_gqa_f64, ids, n_local=16).float()).abs().max() > 1e-3


def test_decode_is_greedy_under_the_reference(tiny_gqa_f64):
    """Decoding (one execution block and one retrieval per token, blocks packed as it goes) continues
    the prompt as the reference does, whatever the grouping (every block retrieved)."""
    method = infllm(tiny_gqa_f64, **SMALL, topk=64, max_cached_block=64)
    prompt = ids_of(90, seed=3)
    method.prefill(prompt)
    decoded = method.decode(6, stop_ids=[])
    assert method.attention.length == 96 and method.attention.block_count > 15
    expected = []
    for _ in range(6):
        ids = torch.cat([prompt, torch.tensor(expected, dtype=torch.long)])
        expected.append(int(reference_hidden_logits(tiny_gqa_f64, ids, n_local=16)[-1].argmax()))
    assert decoded == expected


def test_representative_key_is_the_mean_of_the_most_attended_keys():
    keys = torch.arange(2 * 6 * 3, dtype=torch.float64).view(1, 2, 6, 3)  # 2 KV heads, 6 keys, d = 3
    scores = torch.zeros(1, 4, 6, dtype=torch.float64)  # 4 query heads: heads 0, 1 share KV head 0
    tops = {0: (1, 4), 1: (0, 5), 2: (2, 3), 3: (5, 1)}
    for head, (a, b) in tops.items():
        scores[0, head, a], scores[0, head, b] = 2.0, 1.0
    got = representative_key(keys, scores, repr_topk=2).view(4, 3)
    for head, (a, b) in tops.items():
        expected = keys[0, head // 2, [a, b]].mean(dim=0)
        torch.testing.assert_close(got[head], expected)


def filled_store(count, offload, max_cached=2, heads=2, kv_heads=1, size=4, dim=3):
    """A store of `count` blocks; block b's keys are all b (values -b); representative keys are orthogonal."""
    store = BlockStore(torch.device("cpu"), size, offload, max_cached)
    for b in range(count):
        keys = torch.full((1, kv_heads, size, dim), float(b))
        store.append(keys, -keys, torch.eye(count, heads * dim)[b])
    return store


@pytest.mark.parametrize("offload", [False, True])
def test_retrieval_picks_the_block_the_query_points_at(offload):
    store = filled_store(5, offload)
    query = 3.0 * torch.eye(5, 6)[3] + 1.0 * torch.eye(5, 6)[1]
    assert store.retrieve(query, topk=1).tolist() == [3]
    assert store.retrieve(query, topk=2).tolist() == [1, 3]
    keys, values = store.fetch(store.retrieve(query, topk=2))
    assert keys[0, 0, :, 0].tolist() == [1.0] * 4 + [3.0] * 4
    assert values[0, 0, :, 0].tolist() == [-1.0] * 4 + [-3.0] * 4
    assert store.retrieve(query, topk=5).tolist() == [0, 1, 2, 3, 4]  # at most topk blocks: all, no scoring


def test_offloaded_blocks_are_served_from_an_lru_device_cache():
    store = filled_store(5, offload=True, max_cached=2)
    for chosen, cached in [([0, 1], [0, 1]), ([1, 2], [1, 2]), ([3, 1], [1, 3]), ([4, 0], [4, 0])]:
        keys, _ = store.fetch(torch.tensor(chosen))
        assert keys[0, 0, ::4, 0].tolist() == [float(b) for b in chosen]
        assert sorted(store.cached) == sorted(cached)
    slot_bytes = 2 * 2 * 1 * 4 * 3 * 4  # K and V, 2 slots of [1 head, 4 tokens, d 3], float32
    assert store.device_bytes() == slot_bytes + 5 * 6 * 4
    assert store.host_bytes() == 2 * 5 * 4 * 3 * 4


@pytest.mark.parametrize("offload", [False, True])
def test_blocks_are_copies_and_offloaded_ones_hold_exactly_their_size(offload):
    """Blocks arrive as views of the recent-token buffer, overwritten later; a host block has no spare capacity."""
    store = BlockStore(torch.device("cpu"), 4, offload, max_cached=2)
    recent = torch.arange(24, dtype=torch.float32).view(1, 1, 8, 3)
    for b in range(2):
        store.append(recent[:, :, 4 * b : 4 * b + 4], recent[:, :, 4 * b : 4 * b + 4], torch.eye(2, 3)[b])
    recent.zero_()
    keys, _ = store.fetch(torch.tensor([0, 1]))
    assert keys[0, 0, :, 0].tolist() == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0]
    if offload:
        held = sum(block.untyped_storage().nbytes() for blocks in store.host for block in blocks)
        assert held == 2 * 2 * 4 * 3 * 4  # K and V of 2 blocks of [1 head, 4 tokens, d 3], float32


def test_offload_gives_the_same_outputs_with_evictions(tiny_gqa_f64):
    ids = ids_of(150)
    on = infllm(tiny_gqa_f64, **SMALL, topk=2, max_cached_block=2, offload="on")
    off = infllm(tiny_gqa_f64, **SMALL, topk=2, max_cached_block=2, offload="off")
    torch.testing.assert_close(on.score(ids), off.score(ids), rtol=0, atol=0)


def test_device_state_is_bounded_as_the_input_grows(tiny_llama_gqa):
    """With offload, device bytes grow only by the representative keys (one [H * d] vector per block per layer)."""
    method = infllm(tiny_llama_gqa, **SMALL, topk=2, max_cached_block=2, offload="on")
    backbone = method.backbone
    per_block = len(backbone.layers) * backbone.n_heads * backbone.head_dim * 4
    measured = {}
    for length in (200, 400, 800):
        method.reset()
        method.score(ids_of(length))
        measured[length] = (method.state_bytes(), method.host_state_bytes(), method.attention.block_count)
    (d1, h1, b1), (d2, h2, b2), (d3, h3, b3) = measured.values()
    assert d2 - d1 == (b2 - b1) * per_block and d3 - d2 == (b3 - b2) * per_block
    kv_block = len(backbone.layers) * 2 * backbone.n_kv_heads * 4 * backbone.head_dim * 4
    assert h2 - h1 == (b2 - b1) * kv_block and h3 - h2 == (b3 - b2) * kv_block
    without = infllm(tiny_llama_gqa, **SMALL, topk=2, max_cached_block=2, offload="off")
    without.score(ids_of(800))
    slots = 2 * 2 * len(backbone.layers) * backbone.n_kv_heads * 4 * backbone.head_dim * 4  # K, V of 2 cached blocks
    assert without.state_bytes() == d3 - slots + h3
    assert without.host_state_bytes() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"exc_block_size": 64, "n_local": 32}, "exc_block_size must be <= n_local"),
        ({"topk": 40}, "topk must be <= max_cached_block"),
        ({"repr_topk": 200}, "repr_topk must be <= block_size"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_config_rejects_inconsistent_options(options, message):
    with pytest.raises(ValueError, match=message):
        InfLLMConfig(**options)


def test_prefill_flops_on_the_meta_device_equal_the_real_ones(tiny_llama_gqa):
    """`benchmarks/flops.py` counts 7B shapes on the `meta` device: the method must run there, shapes alone."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_llama_gqa
    with torch.device("meta"):
        shadow = AutoModelForCausalLM.from_config(model.config).eval().requires_grad_(False)
    counts = []
    for loaded in ((model, tokenizer), (shadow, tokenizer)):
        method = infllm(loaded, **SMALL, topk=2)
        counter = FlopCounterMode(display=False)
        with counter:
            method.prefill(torch.zeros(150, dtype=torch.long))
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0

"""UIO-LLMs: kernels against naive attention, encoder mask, encoder at B=0 against transformers, transfer
head at B=0, streaming against a one-shot computation, prefill+decode against score, limits, `keep_recent`
against a rebuild from scratch, checkpoints, and an untouched base model."""

from __future__ import annotations

import pytest
import torch
from cases import naive_attention

from harness.core.errors import UserError
from harness.models import load_model
from methods.attention import rotate
from methods.backbone import Backbone
from methods.base import METHODS, InputTooLong
from methods.uio.config import UIOConfig
from methods.uio.kernels import (
    compression_attention,
    compression_mask,
    compression_positions,
    decoder_attention,
    has_flash_attn,
)
from methods.uio.memory import encode, transfer

SMALL = dict(segment=16, memory_tokens=4, lora_rank=4, lora_alpha=16, encode_batch=3)


def qkv(t, s, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, t, 8, generator=g), torch.randn(batch, 2, s, 8, generator=g),
            torch.randn(batch, 2, s, 8, generator=g))  # fmt: skip


def test_compression_mask_spans():
    mask = compression_mask(8, 4, torch.device("cpu"))
    assert mask[:8, :8].equal(torch.ones(8, 8, dtype=torch.bool).tril()) and not mask[:8, 8:].any()
    assert mask[8].tolist() == [True, True] + [False] * 6 + [True, False, False, False]
    assert mask[11].tolist() == [True] * 8 + [False, False, False, True]
    assert compression_positions(8, 4).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 2, 4, 6, 8]


def test_compression_attention_matches_naive():
    q, k, v = qkv(12, 12)
    expected = naive_attention(q, k, v, compression_mask(8, 4, torch.device("cpu")), 0.3)
    torch.testing.assert_close(compression_attention(q, k, v, 4, 0.3), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fast", [False, True], ids=["sdpa", "sdpa-flash-backend"])
@pytest.mark.parametrize(("t", "s"), [(1, 9), (5, 12), (7, 7)])
def test_decoder_attention_matches_naive_bottom_right_causal(fast, t, s):
    q, k, v = qkv(t, s, seed=t + s)
    mask = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
    torch.testing.assert_close(decoder_attention(q, k, v, 0.3, fast=fast), naive_attention(q, k, v, mask, 0.3),
                               atol=1e-5, rtol=0)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not has_flash_attn(), reason="flash-attn not installed")
def test_flash_attn_path_matches_naive_on_gpu():
    q, k, v = (x.cuda().to(torch.bfloat16) for x in qkv(64, 200))
    mask = torch.ones(64, 200, dtype=torch.bool, device="cuda").tril(diagonal=136)
    expected = naive_attention(q.float(), k.float(), v.float(), mask, 0.3)
    torch.testing.assert_close(decoder_attention(q, k, v, 0.3, fast=True).float(), expected, atol=2e-2, rtol=0)


def build(loaded, **options):
    return METHODS.get("uio")(*loaded, UIOConfig(**{**SMALL, **options}))


def randomise_adapters(method, seed=0):
    """Non-zero LoRA B and a perturbed <mem> so every trainable part changes the result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in method.adapters.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        method.adapters.memory_embedding.add_(torch.randn(method.adapters.memory_embedding.shape, generator=g))
    return method


def ids_of(n, seed=0):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def test_mem_slot_ignores_text_after_its_span(tiny_llama_gqa):
    method = randomise_adapters(build(tiny_llama_gqa))
    a = ids_of(16, seed=1)
    b = a.clone()
    b[9:] = ids_of(7, seed=2)  # slot 1 covers text 0..7, slot 2 covers 0..11
    states = encode(method.backbone, method.adapters, torch.stack([a, b]), 4)  # [L, 2, m, D]
    torch.testing.assert_close(states[:, 0, :2], states[:, 1, :2], atol=1e-6, rtol=0)
    assert (states[1:, 0, 2:] - states[1:, 1, 2:]).abs().max() > 1e-4
    # memory comes from the input of every layer's attention: layer 0 sees only the <mem> embedding
    assert torch.allclose(states[0, 0], states[0, 1])


def transformers_memory_states(model, inputs_embeds, memory_tokens, mask):
    """Reference encoder at B = 0: the HF model itself with `mask` (`[l+m, l+m]` bool) as an explicit 4D
    additive mask (transformers passes a 4D mask through as-is) and UIO's `<mem>` positions; per layer,
    `input_layernorm` of the layer's input (`hidden_states[i]`) at the `<mem>` positions."""
    batch, size, _ = inputs_embeds.shape
    additive = torch.zeros(size, size).masked_fill(~mask, float("-inf")).expand(batch, 1, size, size)
    positions = compression_positions(size - memory_tokens, memory_tokens).expand(batch, size)
    out = model(inputs_embeds=inputs_embeds, attention_mask=additive, position_ids=positions, output_hidden_states=True)
    layers = model.model.layers
    return torch.stack(
        [layers[i].input_layernorm(out.hidden_states[i][:, -memory_tokens:]) for i in range(len(layers))]
    )


@pytest.mark.parametrize("loaded", ["tiny_llama", "tiny_llama_gqa"])
def test_encoder_at_zero_init_equals_transformers_with_compression_mask(loaded, request):
    """`encode` with the LoRA at B = 0 is the frozen model under the compression mask and `<mem>` positions."""
    model, tokenizer = request.getfixturevalue(loaded)
    method = build((model, tokenizer))
    with torch.no_grad():  # a <mem> embedding unlike any token's; the LoRA stays at B = 0
        method.adapters.memory_embedding.add_(
            torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(9))
        )
    segments = torch.stack([ids_of(16, seed=10), ids_of(16, seed=11)])
    states = encode(method.backbone, method.adapters, segments, 4)
    memory = method.adapters.memory_embedding.expand(2, 4, -1)
    inputs_embeds = torch.cat([model.model.embed_tokens(segments), memory], dim=1)
    mask = compression_mask(16, 4, torch.device("cpu"))
    torch.testing.assert_close(states, transformers_memory_states(model, inputs_embeds, 4, mask), atol=1e-5, rtol=0)
    causal = torch.ones(20, 20, dtype=torch.bool).tril()  # the mask is really used: plain causal differs
    assert (states - transformers_memory_states(model, inputs_embeds, 4, causal))[1:].abs().max() > 1e-3


def test_transfer_head_at_zero_init_is_the_frozen_kv(tiny_llama_gqa):
    method = build(tiny_llama_gqa)
    model = tiny_llama_gqa[0]
    states = torch.randn(len(model.model.layers), 4, model.config.hidden_size)
    kv = transfer(method.backbone, method.adapters, states)
    for index, (layer, (k, v)) in enumerate(zip(model.model.layers, kv, strict=True)):
        assert k.shape == (1, 2, 4, 16)
        assert torch.equal(k[0].transpose(0, 1).reshape(4, -1), layer.self_attn.k_proj(states[index]))
        assert torch.equal(v[0].transpose(0, 1).reshape(4, -1), layer.self_attn.v_proj(states[index]))
    randomise_adapters(method)
    k, _ = transfer(method.backbone, method.adapters, states)[0]
    assert not torch.allclose(k[0].transpose(0, 1).reshape(4, -1), model.model.layers[0].self_attn.k_proj(states[0]))


def one_shot_logprobs(method, ids):
    """Reference: encode every full segment, then ONE decoder pass over [all memories ; all text] with a
    block mask (segment s sees the memories of segments < s and its own text causally)."""
    backbone, cfg = method.backbone, method.config
    seg, m = cfg.segment, cfg.memory_tokens
    full = len(ids) // seg if len(ids) % seg else len(ids) // seg - 1  # the last full segment is never needed
    segments = [ids[s * seg : (s + 1) * seg][None] for s in range(full)]
    kv = [transfer(backbone, method.adapters, encode(backbone, method.adapters, x, m)[:, 0]) for x in segments]
    n, memory = len(ids), full * m
    seg_of = torch.arange(n) // seg
    mem_seg = torch.arange(memory) // m
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    mask = torch.cat([mem_seg[None] < seg_of[:, None], (seg_of[None] == seg_of[:, None]) & causal], dim=1)
    text_pos = seg_of * m + torch.arange(n) % seg
    mem_pos = torch.arange(memory)

    class OneShot:
        def attend(self, layer, q, k, v, positions):
            cos, sin = backbone.rope(text_pos)
            keys, values = rotate(k, cos, sin), v
            if memory:
                mcos, msin = backbone.rope(mem_pos)
                mk = torch.cat([rotate(kv[s][layer][0], mcos[s * m : (s + 1) * m], msin[s * m : (s + 1) * m])
                                for s in range(full)], dim=2)  # fmt: skip
                mv = torch.cat([kv[s][layer][1] for s in range(full)], dim=2)
                keys, values = torch.cat([mk, keys], dim=2), torch.cat([mv, values], dim=2)
            return naive_attention(rotate(q, cos, sin), keys, values, mask, backbone.scale)

    hidden = backbone(backbone.embed(ids[None]), torch.arange(n), OneShot())[0]
    return backbone.token_logprobs(hidden[:-1], ids[1:])


@pytest.mark.parametrize("length", [16, 50, 64])
def test_streaming_score_equals_one_shot(tiny_llama_gqa, length):
    method = randomise_adapters(build(tiny_llama_gqa))
    ids = ids_of(length, seed=3)
    torch.testing.assert_close(method.score(ids), one_shot_logprobs(method, ids), atol=1e-4, rtol=0)


def test_score_in_pieces_equals_score_at_once(tiny_llama_gqa):
    """A document scored in two calls: the second call's first token is predicted by the state the
    first call left (`next_logits`), and every other token as in one call."""
    method = randomise_adapters(build(tiny_llama_gqa))
    ids = ids_of(60, seed=4)
    whole = method.score(ids)
    method.reset()
    first = method.score(ids[:21])
    bridge = torch.log_softmax(method.next_logits, -1)[ids[21]]
    second = method.score(ids[21:])
    torch.testing.assert_close(torch.cat([first, bridge[None], second]), whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prompt", [29, 32, 5])
def test_prefill_decode_equals_greedy_under_score(tiny_llama_gqa, prompt):
    method = randomise_adapters(build(tiny_llama_gqa))
    ids = ids_of(prompt, seed=5)
    method.prefill(ids)
    decoded = method.decode(12, stop_ids=[])  # crosses segment boundaries: compresses generated text
    sequence = ids
    for token in decoded:
        method.reset()
        method.score(sequence)
        assert int(method.next_logits.argmax()) == token
        sequence = torch.cat([sequence, torch.tensor([token])])


def test_state_is_memory_plus_open_segment(tiny_llama_gqa):
    method = build(tiny_llama_gqa)
    per_token = Backbone(tiny_llama_gqa[0]).kv_bytes_per_token()
    method.prefill(ids_of(16 * 5 + 3))
    assert method.state_bytes() == (5 * 4 + 3) * per_token
    method.reset()
    method.prefill(ids_of(16 * 5))
    assert method.state_bytes() == 5 * 4 * per_token


def held_bytes(obj, seen=None) -> int:
    """Bytes of every distinct tensor storage reachable from `obj`'s attributes, lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, list | tuple):
        return sum(held_bytes(item, seen) for item in obj)
    if isinstance(obj, dict):
        return sum(held_bytes(item, seen) for item in obj.values())
    if hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module | type):
        return sum(held_bytes(item, seen) for item in vars(obj).values())
    return 0


@pytest.mark.parametrize("over_context", ["error", "keep_recent"])
def test_state_bytes_count_every_tensor_the_decoder_attention_holds(tiny_llama_gqa, over_context):
    method = build(tiny_llama_gqa, window=64, over_context=over_context)
    length = 237 if over_context == "keep_recent" else 16 * 5  # keep_recent: past the window, with an open segment
    method.prefill(ids_of(length))
    attention = method.attention
    assert (method.compressed > attention.kept * 16) == (over_context == "keep_recent")  # it has evicted
    attention.raw = [type(buffer)() for buffer in attention.raw]  # KVBuffer's spare capacity is counted apart
    assert held_bytes(attention) == method.state_bytes()


def test_context_limit_paper_arithmetic_and_policies(tiny_llama_gqa):
    assert UIOConfig().max_context(4096) == 99_328  # 96 segments x 1024 + one raw segment
    assert UIOConfig(memory_tokens=128).max_context(4096) == 25_600
    method = build(tiny_llama_gqa, window=32)  # 4 memories x 4 + 16 raw
    assert method.max_context == 16 * 4 + 16
    method.score(ids_of(80))
    method.reset()
    with pytest.raises(InputTooLong, match="max_context 80"):
        method.score(ids_of(81))


@pytest.fixture(scope="module")
def tiny_gqa64():
    """(model, tokenizer) of the GQA tiny model in float64: method and reference differ by logit rounding only."""
    model, tokenizer = load_model("tiny-random-llama-gqa")
    return model.to(torch.float64), tokenizer


class NaiveMemoryAttention:
    """Plain masked softmax over `[memories at 0..M-1 ; text at positions]`, causal within the text."""

    def __init__(self, backbone, memories, positions):
        self.backbone, self.memories = backbone, memories
        self.cos, self.sin = backbone.rope(positions)
        self.mcos, self.msin = backbone.rope(torch.arange(sum(kv[0][0].shape[2] for kv in memories)))

    def attend(self, layer, q, k, v, positions):
        keys, values = rotate(k, self.cos, self.sin), v
        if self.memories:
            mk = torch.cat([kv[layer][0] for kv in self.memories], dim=2)
            mv = torch.cat([kv[layer][1] for kv in self.memories], dim=2)
            keys, values = torch.cat([rotate(mk, self.mcos, self.msin), keys], 2), torch.cat([mv, values], 2)
        t, s = q.shape[2], keys.shape[2]
        mask = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        return naive_attention(rotate(q, self.cos, self.sin), keys, values, mask, self.backbone.scale)


def keep_recent_reference(method, ids, calls):
    """`over_context=keep_recent` rebuilt from scratch: `[n, V]` log-softmax after each token of `ids`, and
    the (token index, open-segment length) of every drop.

    `ids` are fed in `calls` of the given lengths (a score or prefill call, or one decoded token), each
    cut at segment ends into blocks. Before a block, the oldest memories are dropped while the kept
    ones, the open segment and the block overflow the window. Each block is one plain decoder pass over
    the kept memories at positions 0.. and the whole open segment right after them.
    """
    backbone, seg, m, window = method.backbone, method.config.segment, method.config.memory_tokens, method.window
    memory = {}  # segment index -> per-layer (k before RoPE, v)
    out, drops, position, kept = [], [], 0, 0
    for length in calls:
        end = position + length
        while position < end:
            closed, raw = divmod(position, seg)
            block = min(end, (closed + 1) * seg) - position
            while kept and kept * m + raw + block > window:
                kept -= 1
                drops.append((position, raw))
            for s in range(closed - kept, closed):
                if s not in memory:
                    states = encode(backbone, method.adapters, ids[s * seg : (s + 1) * seg][None], m)
                    memory[s] = transfer(backbone, method.adapters, states[:, 0])
            text = ids[closed * seg : position + block]
            positions = torch.arange(kept * m, kept * m + len(text))
            attention = NaiveMemoryAttention(backbone, [memory[s] for s in range(closed - kept, closed)], positions)
            hidden = backbone(backbone.embed(text[None]), positions, attention)[0]
            out.append(torch.log_softmax(backbone.logits(hidden[-block:]), dim=-1))
            position += block
            kept += position % seg == 0
    return torch.cat(out), drops


def test_keep_recent_prefill_and_decode_equal_rebuild_from_scratch(tiny_gqa64):
    """Drops inside the open segment, in decode and in a second prefill: every step's log-probs."""
    method = randomise_adapters(build(tiny_gqa64, window=24, over_context="keep_recent"))
    assert method.max_context is None
    fed, calls, got = [], [], []
    for prompt, steps in [(ids_of(37, seed=6), 32), (ids_of(20, seed=7), 30)]:
        method.prefill(prompt)
        fed += prompt.tolist()
        calls.append(len(prompt))
        got.append(torch.log_softmax(method.next_logits, -1))
        for _ in range(steps):
            fed += method.decode(1, stop_ids=[])
            calls.append(1)
            got.append(torch.log_softmax(method.next_logits, -1))
            assert method.attention.memory_length + method.attention.raw_length <= 24
    expected, drops = keep_recent_reference(method, torch.tensor(fed), calls)
    assert (60, 12) in drops and (37 + 32, 5) in drops  # one in decode, one in the second prefill
    last = torch.tensor(calls).cumsum(0) - 1
    torch.testing.assert_close(torch.stack(got), expected[last], atol=1e-5, rtol=0)


def test_keep_recent_score_in_pieces_equals_rebuild_from_scratch(tiny_gqa64):
    """Drops at segment starts, and one inside the open segment where the second call begins."""
    method = randomise_adapters(build(tiny_gqa64, window=24, over_context="keep_recent"))
    ids = ids_of(150, seed=8)
    calls = [21, 50, 7, 72]
    got, start = [], 0
    for length in calls:
        chunk = ids[start : start + length]
        if start:
            got.append(torch.log_softmax(method.next_logits, -1)[chunk[0]][None])
        got.append(method.score(chunk))
        start += length
    expected, drops = keep_recent_reference(method, ids, calls)
    assert any(raw > 0 for _, raw in drops) and any(raw == 0 for _, raw in drops)
    expected = expected[:-1].gather(1, ids[1:, None])[:, 0]
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tiny_llama_gqa, tmp_path):
    trained = randomise_adapters(build(tiny_llama_gqa), seed=7)
    ids = ids_of(50)
    expected = trained.score(ids)
    trained.save(tmp_path / "ckpt")
    loaded = build(tiny_llama_gqa, checkpoint=str(tmp_path / "ckpt"))
    torch.testing.assert_close(loaded.score(ids), expected, atol=0, rtol=0)
    assert (build(tiny_llama_gqa).score(ids) - expected).abs().max() > 1e-4
    with pytest.raises(UserError, match="has no encoder_adapter.safetensors"):
        build(tiny_llama_gqa, checkpoint=str(tmp_path))


def test_base_model_is_untouched_and_few_parameters_train(tiny_llama_gqa):
    model, tokenizer = tiny_llama_gqa
    ids = ids_of(40)
    before = model(ids[None]).logits
    method = randomise_adapters(build(tiny_llama_gqa))
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    torch.testing.assert_close(model(ids[None]).logits, before, atol=0, rtol=0)
    trainable = sum(p.numel() for p in method.trainable_parameters())
    layers, hidden, kv = 2, 64, 32
    lora = lambda fan_in, fan_out: 4 * (fan_in + fan_out)  # noqa: E731
    # LoRA on encoder q, v and transfer k, v per layer, plus the <mem> and repeat embeddings
    assert trainable == layers * (lora(hidden, hidden) + 2 * lora(hidden, kv) + lora(hidden, kv)) + 2 * hidden
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("length", [96, 97, 100])
def test_without_memory_equals_full_attention_over_disjoint_segments(tiny_llama_gqa, length):
    """The no-memory control: each segment decoded alone from position 0, its last token predicting the next one."""
    ids = ids_of(length, seed=4)
    method = build(tiny_llama_gqa, segment=16, memory_tokens=4, lora_rank=2, lora_alpha=8, memory=False)
    randomise_adapters(method)  # adapters only feed the memory: without it they change nothing
    full = METHODS.get("full")(*tiny_llama_gqa, METHODS.get("full").Config())
    expected = []
    for start in range(0, length - 1, 16):
        full.reset()
        expected.append(full.score(ids[start : start + 17]))
    torch.testing.assert_close(method.score(ids), torch.cat(expected), atol=1e-5, rtol=0)
    assert method.max_context is None and method.state_bytes() < 16 * Backbone(tiny_llama_gqa[0]).kv_bytes_per_token()
    with_memory = build(tiny_llama_gqa, segment=16, memory_tokens=4, lora_rank=2, lora_alpha=8)
    assert (with_memory.score(ids)[16:] - torch.cat(expected)[16:]).abs().max() > 1e-3


def test_without_memory_cannot_be_trained():
    with pytest.raises(UserError, match="nothing to train"):
        METHODS.get("uio").check_document_length(UIOConfig(segment=16, memory_tokens=4, memory=False), 64)

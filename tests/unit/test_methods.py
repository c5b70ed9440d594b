"""Method contract tests generated from the registry, and StreamingLLM against a naive reference."""

from __future__ import annotations

import pytest
import torch
from cases import CONFIGS, STATEFUL, build, ids_of

from methods.attention import repeat_kv, rotate
from methods.backbone import Backbone
from methods.base import METHODS


@pytest.mark.parametrize(("name", "options"), CONFIGS)
def test_score_is_one_logprob_per_predicted_token(name, options, tiny_llama_gqa):
    method = build(name, tiny_llama_gqa, **options)
    out = method.score(ids_of(70))
    assert out.shape == (69,)
    assert torch.isfinite(out).all() and (out <= 0).all()
    method.reset()
    torch.testing.assert_close(method.score(ids_of(70)), out)  # reset forgets the previous document


@pytest.mark.parametrize(("name", "options"), CONFIGS)
def test_decode_is_greedy_under_score(name, options, tiny_llama_gqa):
    """Each decoded token maximises score()'s distribution after the same prefix (prefill+decode == score)."""
    method = build(name, tiny_llama_gqa, **options)
    prompt = ids_of(40, seed=5)
    method.reset()
    method.prefill(prompt)
    decoded = method.decode(2, stop_ids=[])
    assert len(decoded) == 2
    prefix = prompt
    for token in decoded:
        candidates = []
        for x in range(258):
            method.reset()
            candidates.append(method.score(torch.cat([prefix, torch.tensor([x])]))[-1])
        assert int(torch.stack(candidates).argmax()) == token
        prefix = torch.cat([prefix, torch.tensor([token])])


@pytest.mark.parametrize(("name", "options"), CONFIGS)
def test_score_says_which_tokens_are_greedy(name, options, tiny_llama_gqa):
    """`score(greedy=True)`: the same log-probs, and True exactly where decode would have chosen the token."""
    method = build(name, tiny_llama_gqa, **options)
    prompt = ids_of(40, seed=7)
    method.prefill(prompt)
    decoded = torch.tensor(method.decode(4, stop_ids=[]))
    wrong = (decoded[-1] + 1) % 256
    for ids in (torch.cat([prompt, decoded]), torch.cat([prompt, decoded[:-1], wrong[None]])):
        method.reset()
        plain = method.score(ids)
        method.reset()
        logprobs, greedy = method.score(ids, greedy=True)
        torch.testing.assert_close(logprobs, plain, rtol=0, atol=0)
        assert greedy.shape == (ids.numel() - 1,) and greedy.dtype == torch.bool
        assert greedy[-4:-1].all() and bool(greedy[-1]) == bool(ids[-1] == decoded[-1])
    assert not greedy[:39].all()  # random prompt tokens are rarely the model's argmax


def naive_streaming_logprobs(model, ids, n_sink, window):
    """Official StreamingLLM semantics, one token per step: keys cached before RoPE, rotated by their
    index in the cache, the query by the cache length; after each step the cache keeps the sinks and
    the newest `window` entries."""
    backbone = Backbone(model)
    caches = [[] for _ in backbone.layers]

    class OneToken:
        def attend(self, layer, q, k, v, positions):
            cache = caches[layer]
            cache.append((k, v))
            keys = torch.cat([c[0] for c in cache], dim=2)
            values = torch.cat([c[1] for c in cache], dim=2)
            n = keys.shape[2]
            cos, sin = backbone.rope(torch.arange(n))
            keys = repeat_kv(rotate(keys, cos, sin), q.shape[1] // k.shape[1])
            values = repeat_kv(values, q.shape[1] // k.shape[1])
            query = rotate(q, cos[-1:], sin[-1:])
            weights = torch.softmax((query @ keys.transpose(-1, -2)) * backbone.scale, dim=-1)
            if n > n_sink + window:
                del cache[n_sink : n - window]
            return weights @ values

    out = []
    attention = OneToken()
    for position in range(len(ids) - 1):
        hidden = backbone(backbone.embed(ids[position : position + 1][None]), torch.tensor([position]), attention)
        out.append(torch.log_softmax(backbone.logits(hidden[0, -1]), -1)[ids[position + 1]])
    return torch.stack(out)


@pytest.mark.parametrize("chunk_size", [1, 8, 64])
def test_streaming_equals_token_by_token_reference(chunk_size, tiny_llama_gqa):
    ids = ids_of(90, seed=3)
    ours = build("streaming", tiny_llama_gqa, n_sink=3, window=20, chunk_size=chunk_size).score(ids)
    expected = naive_streaming_logprobs(tiny_llama_gqa[0], ids, n_sink=3, window=20)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_streaming_with_window_over_input_equals_full(tiny_llama):
    ids = ids_of(200, seed=4)
    streaming = build("streaming", tiny_llama, window=500, chunk_size=64).score(ids)
    full = build("full", tiny_llama).score(ids)
    torch.testing.assert_close(streaming, full, atol=1e-4, rtol=0)


def test_streaming_short_window_differs_from_full(tiny_llama):
    ids = ids_of(200, seed=4)
    streaming = build("streaming", tiny_llama, n_sink=4, window=16).score(ids)
    full = build("full", tiny_llama).score(ids)
    torch.testing.assert_close(streaming[:20], full[:20], atol=1e-4, rtol=0)  # inside the window: identical
    assert (streaming[100:] - full[100:]).abs().max() > 1e-3


def test_streaming_state_is_bounded_and_full_state_grows(tiny_llama):
    model, _ = tiny_llama
    per_token = Backbone(model).kv_bytes_per_token()
    streaming = build("streaming", tiny_llama, n_sink=4, window=32, chunk_size=16)
    full = build("full", tiny_llama)
    sizes = {}
    for length in (100, 300):
        for method in (streaming, full):
            method.reset()
            method.prefill(ids_of(length))
            sizes[method.name, length] = method.state_bytes()
    assert sizes["streaming", 100] == sizes["streaming", 300] == (4 + 32) * per_token
    assert sizes["full", 100] == 100 * per_token and sizes["full", 300] == 300 * per_token


def test_decode_needs_prefill(tiny_llama):
    method = build("full", tiny_llama)
    with pytest.raises(RuntimeError, match="prefill"):
        method.decode(3, stop_ids=[])


def test_decode_stops_at_stop_token(tiny_llama):
    method = build("full", tiny_llama)
    method.prefill(ids_of(30))
    first = method.decode(1, stop_ids=[])
    method.reset()
    method.prefill(ids_of(30))
    assert method.decode(10, stop_ids=first) == first


def test_full_rejects_rope_scaling_without_factor():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rope_factor > 1"):
        METHODS.get("full").Config(rope_scaling="linear")


@pytest.mark.parametrize(
    ("name", "options", "length", "beyond"),
    [
        ("full", {}, 4097, True),  # the tiny models are trained to 4096 positions
        ("full", {}, 4096, False),
        ("full", {"rope_scaling": "linear", "rope_factor": 4.0}, 16_384, False),
        ("streaming", {}, 100_000, False),  # 4 sinks + 2044 recent positions
        ("streaming", {"n_sink": 4, "window": 8000}, 5000, True),
        ("uio", {"segment": 8, "memory_tokens": 2}, 100_000, False),
        ("uio", {"segment": 8, "memory_tokens": 2, "window": 8192}, 100_000, True),
        ("uio", {"segment": 8, "memory_tokens": 2, "window": 8192}, 100, False),
        ("infllm", {}, 100_000, False),  # distances stop at n_local - 1 = 4095
        ("infllm", {"n_local": 8192}, 5000, True),
        ("infllm", {"n_local": 8192}, 4000, False),
    ],
)
def test_beyond_trained_window_follows_the_positions_each_method_uses(name, options, length, beyond, tiny_llama):
    method = build(name, tiny_llama, **options)
    assert method.model.config.max_position_embeddings == 4096
    assert method.beyond_trained_window(length) is beyond


def test_full_auto_rope_factor_fits_each_document(tiny_llama):
    """`rope_factor: auto` is plain attention inside the trained window and YaRN x (T / window) past it."""
    from methods.backbone import Backbone

    trained = tiny_llama[0].config.max_position_embeddings
    auto = build("full", tiny_llama, rope_scaling="yarn", rope_factor="auto")
    short = ids_of(300)
    torch.testing.assert_close(auto.score(short), build("full", tiny_llama).score(short), rtol=0, atol=0)
    positions = torch.arange(0, 2 * trained, 997)
    auto.reset()
    auto.fit(2 * trained)
    yarn = Backbone(tiny_llama[0], {"rope_type": "yarn", "factor": 2.0})
    torch.testing.assert_close(auto.backbone.rope(positions), yarn.rope(positions), rtol=0, atol=0)
    assert not auto.beyond_trained_window(10 * trained)
    with pytest.raises(ValueError, match="rope_factor=auto needs"):
        METHODS.get("full").Config(rope_factor="auto")


@pytest.mark.parametrize(("name", "options"), CONFIGS + STATEFUL)
def test_a_saved_state_answers_each_question_as_a_fresh_prefill_would(name, options, tiny_llama_gqa):
    """Shared context: questions asked from copies of one prefilled context equal context + question from scratch."""
    method = build(name, tiny_llama_gqa, **options)
    context, questions = ids_of(150, seed=3), [ids_of(7, seed=4), ids_of(9, seed=6)]
    fresh = []
    for question in questions:
        method.reset()
        method.prefill(context)
        method.prefill(question)
        fresh.append((method.next_logits.clone(), method.decode(3, stop_ids=[])))
    method.reset()
    method.prefill(context)
    saved = method.save_state()
    assert saved is not None, f"{name} cannot copy its state"
    for question, (logits, tokens) in [*zip(questions, fresh, strict=True), (questions[0], fresh[0])]:
        method.load_state(saved)
        method.prefill(question)  # decoding after the first question must not change the saved copy
        torch.testing.assert_close(method.next_logits, logits)
        assert method.decode(3, stop_ids=[]) == tokens


def test_a_saved_state_shares_the_weights(tiny_llama_gqa):
    method = build("uio", tiny_llama_gqa, segment=8, memory_tokens=2, lora_rank=2, lora_alpha=8)
    backbone = method.backbone
    method.prefill(ids_of(30))
    method.load_state(method.save_state())
    assert method.backbone is backbone and method.attention.backbone is backbone
    assert method.attention is not None and method.save_state()["attention"] is not method.attention


@pytest.mark.parametrize(("name", "options"), [*CONFIGS, STATEFUL[1]])
def test_a_second_prefill_continues_the_document(name, options, tiny_llama_gqa):
    """prefill(a); decode; prefill(b) reads what one prefill of a, the decoded tokens and b would (a question after a
    shared context). InfLLM with blocks past its window is left out: its retrieval follows each call's chunks."""
    method = build(name, tiny_llama_gqa, **options)
    first, then = ids_of(150, seed=3), ids_of(9, seed=4)
    method.reset()
    method.prefill(first)
    decoded = torch.tensor(method.decode(2, stop_ids=[]))
    method.prefill(then)
    continued = method.next_logits.clone()
    method.reset()
    method.prefill(torch.cat([first, decoded, then]))
    torch.testing.assert_close(continued, method.next_logits, rtol=1e-4, atol=1e-4)

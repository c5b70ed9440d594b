"""The backbone reproduces plain transformers: the anchor every method's equivalence rests on."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from methods.backbone import Backbone
from methods.base import METHODS


def hf_logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[None]).logits[0].float()
    return torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[1:, None]).squeeze(-1)


def full(model, tokenizer, **options):
    cls = METHODS.get("full")
    return cls(model, tokenizer, cls.Config(**options))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_gqa"])
# (700, 1200): the second chunk's 500 queries attend in blocks of QUERY_BLOCK over the keys they can see
@pytest.mark.parametrize(("chunk_size", "length"), [(1000, 300), (37, 300), (700, 1200)])
def test_full_score_equals_transformers(request, fixture, chunk_size, length):
    model, tokenizer = request.getfixturevalue(fixture)
    ids = torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(1))
    ours = full(model, tokenizer, chunk_size=chunk_size).score(ids)
    torch.testing.assert_close(ours, hf_logprobs(model, ids), atol=1e-4, rtol=0)


def _random_model(config):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


SMALL = dict(vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [Qwen2Config(**SMALL), MistralConfig(**SMALL, sliding_window=None)],
    ids=["qwen2-qkv-bias", "mistral"],
)
def test_other_llama_family_models(config, tiny_llama):
    model = _random_model(config)
    if config.model_type == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    ids = torch.randint(0, 256, (120,), generator=torch.Generator().manual_seed(2))
    ours = full(model, tiny_llama[1], chunk_size=50).score(ids)
    torch.testing.assert_close(ours, hf_logprobs(model, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize("rope_type", ["linear", "dynamic", "yarn"])
def test_rope_scaling_matches_transformers_config(rope_type, tiny_llama):
    model, tokenizer = tiny_llama
    parameters = {"rope_type": rope_type, "factor": 4.0, "rope_theta": 10000.0}
    if rope_type == "yarn":
        parameters["original_max_position_embeddings"] = model.config.max_position_embeddings
    scaled_config = LlamaConfig(**{**model.config.to_dict(), "rope_parameters": parameters})
    reference = AutoModelForCausalLM.from_config(scaled_config).eval()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(3))
    # one chunk: dynamic NTK depends on the longest position seen, as in HF's uncached forward
    ours = full(model, tokenizer, rope_scaling=rope_type, rope_factor=4.0, chunk_size=1000).score(ids)
    expected = hf_logprobs(reference, ids)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)
    if rope_type != "dynamic":  # dynamic only differs past the trained length
        assert (ours - hf_logprobs(model, ids)).abs().max() > 1e-3


def test_token_logprobs_are_chunked_log_softmax(tiny_llama, monkeypatch):
    import methods.backbone as backbone_module

    model, _ = tiny_llama
    backbone = Backbone(model)
    hidden = torch.randn(50, model.config.hidden_size)
    targets = torch.randint(0, 258, (50,))
    monkeypatch.setattr(backbone_module, "LOGITS_CHUNK", 7)
    expected = torch.log_softmax(model.lm_head(hidden), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(backbone.token_logprobs(hidden, targets), expected, atol=1e-5, rtol=0)


def test_the_feed_forward_in_row_blocks_is_the_whole_one(tiny_llama, monkeypatch):
    import methods.backbone as backbone_module

    model, _ = tiny_llama
    ids = torch.randint(0, 258, (1, 50), generator=torch.Generator().manual_seed(0))
    method = METHODS.get("full")(*tiny_llama, METHODS.get("full").Config())
    whole = method.score(ids[0])
    monkeypatch.setattr(backbone_module, "MLP_ROWS", 7)  # 50 rows: 7 blocks of 7 and one of 1
    method.reset()
    torch.testing.assert_close(method.score(ids[0]), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole, hf_logprobs(model, ids[0]), atol=1e-4, rtol=0)


def test_unsupported_model_type_is_a_user_error():
    from harness.core.errors import UserError

    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(UserError, match="gpt2.*Valid: llama, mistral, qwen2"):
        Backbone(Fake())

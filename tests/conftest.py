"""Shared fixtures and test tiers: unit (default), slow (embedded model, in CI), long and gpu (opt-in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the checkout, as tasks look for it

# Nothing is downloaded in tests: a hub lookup must fail at once, not after minutes of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--run-long", action="store_true", help="run 32K-100K token regressions (marker long)")
    parser.addoption("--run-gpu", action="store_true", help="run CUDA tests (marker gpu)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "long" in item.keywords and not config.getoption("--run-long"):
            item.add_marker(pytest.mark.skip(reason="opt-in: --run-long"))
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(pytest.mark.skip(reason="opt-in: --run-gpu"))
        for mark in item.iter_markers("data"):
            absent = [folder for folder in mark.args if not (SHARED_DATA / folder).is_dir()]
            if absent:
                item.add_marker(pytest.mark.skip(reason=f"the shared data folder lacks {', '.join(absent)}"))


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder beside the checkout; a test reading it carries `@pytest.mark.data(folder, ...)`."""
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the summation order of a reference run (a Ray worker's, whose
    OMP_NUM_THREADS is its 1 CPU), or of a training whose trajectory a second thread's rounding would change."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_llama():
    """(model, tokenizer): 2 layers, hidden 64, 4 heads, byte tokenizer, fixed seed."""
    from harness.models import load_model

    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_llama_gqa():
    """(model, tokenizer) with 4 query heads sharing 2 KV heads."""
    from harness.models import load_model

    return load_model("tiny-random-llama-gqa")


@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct; tests using it are marked slow."""
    from harness.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_llama):
    """The tiny random Llama and its byte tokenizer as a Hugging Face directory (lm-eval loads by path)."""
    model, tokenizer = tiny_llama
    path = tmp_path_factory.mktemp("tiny-hf")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# A chat template without a system role (it raises), so a system instruction exercises lm-eval's fallback.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory, tiny_llama):
    """`tiny_dir` with a chat template on its tokenizer."""
    from harness.models import byte_tokenizer

    path = tmp_path_factory.mktemp("tiny-chat")
    tiny_llama[0].save_pretrained(path)
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return str(path)

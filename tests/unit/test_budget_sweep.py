"""`examples/budget.yaml` puts every method at the fraction of full attention's KV its label claims.

Each entry is built on a one-layer random Llama with SmolLM2-135M's attention per KV head (3 query heads
sharing each KV head, head_dim 64) and prefilled with the sweep's length; its `state_bytes()` over full
attention's is then SmolLM2's fraction, since every term of every method's state is per layer and per KV-head
group (KV, InfLLM's representative keys and attention scores, UIO's memory K/V), except RMT's memory vectors
(memory_tokens x hidden floats for the whole model), which are rescaled to SmolLM2's hidden size and layer
count analytically. Checkpoint entries run untrained here: the state's size does not depend on the weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from harness.core.paths import cache_dir
from harness.models import TINY_VOCAB, byte_tokenizer
from harness.sweep import expand, load_sweep
from methods.base import METHODS

ROOT = Path(__file__).parents[2]
SWEEP = ROOT / "examples" / "budget.yaml"
# SmolLM2-135M (`~/.cache/lch/models/smollm2-135m/config.json`, checked below when converted)
SMOLLM2 = {
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "hidden_size": 576,
    "max_position_embeddings": 8192,
}  # fmt: skip
LADDER = (0.5, 0.25, 0.125, 0.0625)
RUNG_TOLERANCE = 0.005  # an entry's state is within 0.5 percentage points of the rung its label names
STATED_TOLERANCE = 0.006  # and equals the "actual N%" comment, written to 2 decimals, to 0.006 points
FLOAT32 = 4


def labels() -> list[str]:
    """The sweep's method labels, read at collection (YAML only; what `expand` names them)."""
    methods = yaml.safe_load(SWEEP.read_text(encoding="utf-8"))["methods"]
    return [m.get("label") or m["name"] for m in methods]


def rung(label: str) -> float:
    """The fraction a label claims: `full` is 1, `streaming-12.5%` is 0.125."""
    if label == "full":
        return 1.0
    found = re.fullmatch(r"[a-z]+-([0-9.]+)%", label)
    assert found, f"label '{label}' names no rung (`<method>-<percent>%`)"
    return float(found.group(1)) / 100


def stated() -> dict[str, float]:
    """Label -> the fraction the entry's `# actual N%` comment gives, entries in file order."""
    text = SWEEP.read_text(encoding="utf-8").split("\nmethods:\n", 1)[1].split("\ntasks:\n", 1)[0]
    chunks = re.split(r"^  - name:", text, flags=re.MULTILINE)[1:]
    out = {}
    for label, chunk in zip(labels(), chunks, strict=True):
        found = re.search(r"#\s*actual ([0-9.]+)%", chunk)
        assert found, f"entry '{label}' has no '# actual N%' comment"
        out[label] = float(found.group(1)) / 100
    return out


@pytest.fixture(scope="module")
def cells():
    """The sweep's cells, one per label (checkpoint paths are relative to the repository root)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        expanded = expand(load_sweep(SWEEP))
    return {cell.label: cell for cell in expanded}


@pytest.fixture(scope="module")
def length(cells) -> int:
    lengths = {cell.length for cell in cells.values()}
    assert len(lengths) == 1, f"the ladder is at one length, got {sorted(lengths)}"
    return lengths.pop()


@pytest.fixture(scope="module")
def model():
    """One layer, SmolLM2's query heads per KV head and head size, its trained window (UIO's and RMT's limits)."""
    group = SMOLLM2["num_attention_heads"] // SMOLLM2["num_key_value_heads"]
    config = LlamaConfig(
        vocab_size=TINY_VOCAB, hidden_size=group * SMOLLM2["head_dim"], intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=group, num_key_value_heads=1, head_dim=SMOLLM2["head_dim"],
        max_position_embeddings=SMOLLM2["max_position_embeddings"],
        bos_token_id=TINY_VOCAB - 2, eos_token_id=TINY_VOCAB - 1, pad_token_id=TINY_VOCAB - 1,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval().requires_grad_(False), byte_tokenizer()


def kv_bytes(config: dict, tokens: int) -> int:
    """Bytes of full attention's float32 K and V for `tokens` tokens over all layers."""
    per_token = 2 * config["num_key_value_heads"] * config["head_dim"] * FLOAT32
    return config["num_hidden_layers"] * per_token * tokens


@pytest.fixture(scope="module")
def fractions(cells, length, model) -> dict[str, float]:
    """Label -> SmolLM2's `state_bytes()` after a `length`-token prefill, over full attention's."""
    base, tokenizer = model
    tiny = base.config.to_dict()
    ids = torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(0))
    out = {}
    for label, cell in cells.items():
        config = cell.method_config
        if config.checkpoint_fields:
            config = config.model_copy(update=dict.fromkeys(config.checkpoint_fields))
        method = METHODS.get(cell.method)(base, tokenizer, config)
        method.prefill(ids)
        state = method.state_bytes()
        if cell.method == "full":
            assert state == kv_bytes(tiny, length)
        if cell.method == "rmt":  # the KV of [memory ; last segment], plus the memory vectors, rescaled to SmolLM2
            memory = method.memory_state.numel() * method.memory_state.element_size()
            m, last = config.memory_tokens, length - (length - 1) // config.segment * config.segment
            assert memory == m * tiny["hidden_size"] * FLOAT32
            assert state - memory == kv_bytes(tiny, m + last)
            out[label] = (state - memory) / kv_bytes(tiny, length) + (
                m * SMOLLM2["hidden_size"] * FLOAT32 / kv_bytes(SMOLLM2, length)
            )
        else:
            out[label] = state / kv_bytes(tiny, length)
    return out


def test_the_ladder_is_complete_at_one_length_inside_the_trained_window(cells, length):
    assert length <= SMOLLM2["max_position_embeddings"]  # full attention is the honest 100 % there
    assert "full" in cells
    for name in ("streaming", "infllm", "uio", "rmt"):
        rungs = {rung(label) for label, cell in cells.items() if cell.method == name}
        assert set(LADDER) <= rungs, f"{name} lacks rungs {sorted(set(LADDER) - rungs)}"


@pytest.mark.parametrize("label", labels())
def test_state_is_at_the_rung_its_label_claims(label, fractions):
    actual = fractions[label]
    assert abs(actual - rung(label)) <= RUNG_TOLERANCE, f"{label}: {actual:.4%} of full attention's KV"
    assert abs(actual - stated()[label]) * 100 <= STATED_TOLERANCE, f"{label}: comment says {stated()[label]:.4%}"


def test_smollm2_dimensions_are_the_embedded_models():
    path = cache_dir() / "models" / "smollm2-135m" / "config.json"
    if not path.is_file():
        pytest.skip("the embedded model is not converted here")
    config = json.loads(path.read_text(encoding="utf-8"))
    assert {key: config[key] for key in SMOLLM2} == SMOLLM2

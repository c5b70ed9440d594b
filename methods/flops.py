"""Analytic FLOP count of what a method runs, from the shapes lch's own kernels see: no dispatcher, little cost.

Every method runs through the same few places: the backbone's decoder layers (and UIO's encoder layers),
the output layer, the attention kernels of `methods.attention` and a method's own attention matmuls
(InfLLM's two stages and block retrieval). Each reports here what it computes while a `Ledger` is open:

* `linear`: matrix multiplications of the projections, MLPs, output layer and transfer heads, 2 FLOPs a
  multiply-add, from the weights' shapes (a LoRA-wrapped projection: its base and its two low-rank factors);
* `attention`: QK^T and AV, 4 x head_dim FLOPs a (query, key) pair and head, over the pairs each query
  actually sees (a causal or explicit mask's allowed pairs; a method's retrieval scores included);
* `computed_attention`: the same over every pair the kernel multiplies, masked ones included
  (`torch.utils.flop_counter` counts these; a fused causal kernel skips most of the masked half).

Model FLOPs (`linear + attention`) are what roofline reports use: the work the method needs, not what
one kernel wastes. Normalisations, RoPE and softmax (a few FLOPs an element) are not counted.
"""

from __future__ import annotations

import contextlib
import weakref
from contextvars import ContextVar
from dataclasses import dataclass

import torch


@dataclass
class Ledger:
    """FLOPs counted while open (`counting`)."""

    linear: float = 0.0
    attention: float = 0.0
    computed_attention: float = 0.0

    @property
    def model_flops(self) -> float:
        """Linear layers plus the attention pairs that are seen."""
        return self.linear + self.attention

    @property
    def computed_flops(self) -> float:
        """Linear layers plus every attention pair multiplied, masked or not."""
        return self.linear + self.computed_attention


_OPEN: ContextVar[Ledger | None] = ContextVar("flop_ledger", default=None)
_LAST_MASK: list = [lambda: None, 0.0]  # a weak reference to the last mask counted, and its allowed pairs


@contextlib.contextmanager
def counting(ledger: Ledger):
    """Count into `ledger` inside the block (nested blocks count into the innermost only)."""
    token = _OPEN.set(ledger)
    try:
        yield ledger
    finally:
        _OPEN.reset(token)


def linear(rows: int, weights: int) -> None:
    """`rows` vectors through matrices of `weights` elements in all."""
    ledger = _OPEN.get()
    if ledger is not None:
        ledger.linear += 2.0 * rows * weights


def through(x: torch.Tensor, *modules) -> None:
    """`x`'s rows (all but its last dim) through the linear `modules`."""
    if _OPEN.get() is not None:
        linear(x.numel() // x.shape[-1], sum(map(weights, modules)))


def layer(rows: int, layer, *adapted) -> None:
    """`rows` vectors through a decoder layer's matrices, plus the LoRA factors of its `adapted` projections."""
    if _OPEN.get() is not None:
        linear(rows, layer_weights(layer) + lora_weights(*adapted))


def layer_weights(layer) -> int:
    """Elements of a decoder layer's projection and MLP matrices (a Llama / Mistral / Qwen2 layer, or lch's `Layer`)."""
    attn, mlp = layer.self_attn, layer.mlp
    return sum(map(weights, (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
                             mlp.down_proj)))  # fmt: skip


def weights(module) -> int:
    """Elements a vector meets through a linear module: its weight, or a LoRA wrapper's base weight and factors."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight.numel()
    factors = [p.numel() for name in ("lora_A", "lora_B") for p in getattr(module, name).parameters()]
    return base.weight.numel() + sum(factors)


def lora_weights(*modules) -> int:
    """Elements of the LoRA factors alone of `modules` (0 for a plain linear)."""
    return sum(weights(module) - getattr(module, "base_layer", module).weight.numel() for module in modules)


def pairs(batch_heads: int, head_dim: int, seen: float, computed: float, seen_dim: int | None = None) -> None:
    """Attention of `batch_heads` (batch x query heads) over `seen` (query, key) pairs each; `computed` multiplied.

    `seen_dim`: the head size the model needs, when the kernel multiplies padded heads of `head_dim`.
    """
    ledger = _OPEN.get()
    if ledger is not None:
        ledger.attention += 4.0 * batch_heads * (seen_dim or head_dim) * seen
        ledger.computed_attention += 4.0 * batch_heads * head_dim * computed


def sdpa_call(
    q: torch.Tensor,
    k: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    seen_dim: int | None = None,
) -> None:
    """Count one scaled-dot-product attention of `[B, H, T, d]` queries over `[B, Hkv, S, d]` keys (`pairs`)."""
    if _OPEN.get() is None:
        return
    batch, heads, t, dim = q.shape
    s = k.shape[-2]
    if is_causal:  # SDPA aligns the mask top-left: query i sees keys 0..min(i, s - 1)
        seen = causal_pairs(min(t, s)) + max(0, t - s) * s
    elif attn_mask is None:
        seen = t * s
    else:
        seen = _allowed(attn_mask) / _broadcast_rows(attn_mask)
    pairs(batch * heads, dim, seen, t * s, seen_dim)


def matmul(flops: float, needed: bool = True) -> None:
    """A method's own extra product: retrieval scores, attention statistics (`needed`), or a kernel's detour."""
    ledger = _OPEN.get()
    if ledger is not None:
        ledger.attention += flops if needed else 0.0
        ledger.computed_attention += flops


def masked_out(mask: torch.Tensor, target_numel: int) -> float:
    """Entries a boolean `mask` (True: hidden) hides in a tensor of `target_numel` elements it broadcasts over."""
    if _OPEN.get() is None:
        return 0.0
    return float(mask.sum()) * target_numel / mask.numel()


def _allowed(mask: torch.Tensor) -> float:
    """Pairs a mask lets through over all its leading dims (boolean: True; float: finite); every layer reuses one."""
    if _LAST_MASK[0]() is not mask:
        allowed = mask if mask.dtype == torch.bool else torch.isfinite(mask)
        _LAST_MASK[:] = [weakref.ref(mask), float(allowed.sum())]
    return _LAST_MASK[1]


def _broadcast_rows(mask: torch.Tensor) -> int:
    """How many (batch, head) pairs the mask's own leading dims hold (1 when it broadcasts over them)."""
    leading = mask.shape[:-2]
    return int(torch.Size(leading).numel()) if leading else 1


def planned(config, tokens: float, pairs: float, logits: float | None = None) -> float:
    """Model FLOPs of a forward, planned from a model config alone (no weights): what the kernels would report.

    Args:
        config: a Llama / Mistral / Qwen2 config (`hidden_size`, `intermediate_size`, heads, layers, vocab).
        tokens: token vectors through the decoder layers.
        pairs: (query, key) pairs seen per layer and query head, summed over the tokens.
        logits: token vectors through the output layer (default: every token).
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    attention_weights = 2 * hidden * config.num_attention_heads * head_dim + 2 * hidden * kv  # q, o and k, v
    weights = attention_weights + 3 * hidden * config.intermediate_size  # and the gated MLP
    logits = tokens if logits is None else logits
    attention = 4.0 * config.num_attention_heads * head_dim * pairs * layers
    return 2.0 * tokens * weights * layers + 2.0 * logits * hidden * config.vocab_size + attention


def causal_pairs(length: int) -> float:
    """(query, key) pairs of causal attention over `length` tokens: each sees itself and those before it."""
    return length * (length + 1) / 2

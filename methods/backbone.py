"""Our own Llama-family decoder forward over a Hugging Face model's weights.

Methods own the forward loop through this module instead of patching transformers: every official
long-context implementation that patched attention broke on a later transformers release (InfLLM
issues #57/#58, streaming-llm #14/#72). The backbone reuses the HF modules (embeddings, projections,
norms, MLPs, the rotary table with its `rope_scaling`) and hands attention of every layer to a
method-supplied `Attention` object, which owns positions and caches. Supported: Llama, Mistral,
Qwen2 (q/k/v bias comes with the Linear modules) and SmolLM (a Llama). Mistral's `sliding_window`
is not applied by the backbone: a method that wants it implements it.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Protocol

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.core.errors import UserError
from methods import flops
from methods.parts import PROJECTIONS, Parts

SUPPORTED = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("linear", "dynamic", "yarn")
LOGITS_CHUNK = 1024  # rows of [chunk, vocab] float32 per log-softmax step; never [length, vocab]
# The feed-forward acts on each token alone, so a long chunk runs it in row blocks: an 8,192-token chunk's
# [8192, 1536] intermediates are 50 MB each (SmolLM2), out of every CPU cache; InfLLM's 8K prefill (chunks of
# 8,192, the official size) ran 2% faster in blocks of 2,048 (benchmarks/prefill_before_after.py, idle 2 cores).
MLP_ROWS = 2048


class Attention(Protocol):
    """Per-layer attention and cache of one method, for one document."""

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Attend `T` new tokens and update the cache.

        Args:
            layer: layer index.
            q: `[B, H, T, d]` queries before RoPE.
            k: `[B, Hkv, T, d]` keys of the new tokens, before RoPE.
            v: `[B, Hkv, T, d]` values of the new tokens.
            positions: `[T]` absolute positions of the new tokens in the document.

        Returns:
            `[B, H, T, d]` attention output.

        """
        ...


class Layer:
    """One decoder layer's modules, under HF's names: a method's own (`Parts`) where it has them, else the base's."""

    def __init__(self, base: nn.Module, own: nn.Module | None):
        own_attention = getattr(own, "self_attn", None)
        self.self_attn = SimpleNamespace(**{name: _pick(own_attention, base.self_attn, name) for name in PROJECTIONS})
        self.input_layernorm = _pick(own, base, "input_layernorm")
        self.post_attention_layernorm = _pick(own, base, "post_attention_layernorm")
        self.mlp = _pick(own, base, "mlp")


def _pick(own: nn.Module | None, base: nn.Module, name: str) -> nn.Module:
    """`own.name` when the method has its own module there, else `base.name`."""
    module = getattr(own, name, None) if own is not None else None
    return module if module is not None else getattr(base, name)


class Backbone(nn.Module):
    """Decoder forward over `model`'s modules; weights are shared with it, never copied.

    `parts` (`methods.parts.Parts`) hands the backbone a method's own modules for some parts of the
    model (LoRA-wrapped projections, trained norms, MLPs and input embedding); the output layer is
    always the base model's.
    """

    def __init__(self, model: nn.Module, rope_scaling: dict | None = None, parts: Parts | None = None):
        super().__init__()
        config = model.config
        if config.model_type not in SUPPORTED:
            raise UserError(
                f"model type '{config.model_type}' is not supported by the backbone. Valid: {', '.join(SUPPORTED)}"
            )
        self.config = config
        self.model = model
        inner = model.model
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.rotary = scaled_rotary(inner.rotary_emb, config, rope_scaling) if rope_scaling else inner.rotary_emb
        self.parts = parts
        self.checkpoint_layers = False
        self._rope_key: tuple = (None, None)
        own = parts.layers if parts is not None else [None] * len(inner.layers)
        self._layers = [Layer(layer, mine) for layer, mine in zip(inner.layers, own, strict=True)]
        self._layer_weights = [flops.layer_weights(layer) for layer in self._layers]
        self.embed_tokens = _pick(parts, inner, "embed_tokens")
        self.norm = _pick(parts, inner, "norm")

    @property
    def layers(self) -> list[Layer]:
        """The decoder layers: the method's own modules where its `parts` has them, the base model's elsewhere."""
        return self._layers

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.model.lm_head.weight.device

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(cos, sin)`, each `[T, d]` float32, for integer `positions` `[T]`, with the model's RoPE scaling.

        Every layer of one forward asks for the same `positions` tensor: the tables of the last one asked
        (and of the current rotary table, which `rope_factor: auto` swaps) are kept.
        """
        if positions is not self._rope_key[0] or self.rotary is not self._rope_key[1]:
            probe = torch.empty(0, device=self.device, dtype=torch.float32)
            cos, sin = self.rotary(probe, positions[None].to(self.device))
            self._rope_key, self._rope_tables = (positions, self.rotary), (cos[0].float(), sin[0].float())
        return self._rope_tables

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`[B, T]` ids -> `[B, T, D]` input embeddings."""
        return self.embed_tokens(input_ids)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, attention: Attention) -> torch.Tensor:
        """Run the decoder layers on embeddings.

        Args:
            hidden: `[B, T, D]` input embeddings.
            positions: `[T]` absolute positions, handed to `attention` (the method decides what RoPE sees).
            attention: the method's per-layer attention for this document.

        Returns:
            `[B, T, D]` final hidden states, after the final norm.

        With `checkpoint_layers` (the training loop's `--activation-checkpointing`), each layer keeps only
        its input for backward and runs again then: activations of one layer at a time instead of all of
        them (a 16K-token SmolLM2 document: about 20 GB -> 1 GB). The attention must then be stateless
        (a training attention), since it runs twice.
        """
        recompute = self.checkpoint_layers and torch.is_grad_enabled()
        for index, layer in enumerate(self.layers):
            if recompute:
                hidden = checkpoint(self._layer, index, layer, hidden, positions, attention, use_reentrant=False)
            else:
                hidden = self._layer(index, layer, hidden, positions, attention)
        return rms_norm(self.norm, hidden)

    def _layer(self, index: int, layer: Layer, hidden, positions, attention: Attention) -> torch.Tensor:
        batch, length, _ = hidden.shape
        flops.linear(batch * length, self._layer_weights[index])
        attn = layer.self_attn
        x = rms_norm(layer.input_layernorm, hidden)
        q = attn.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        out = attention.attend(index, q, k, v, positions)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
        if length <= MLP_ROWS:
            return hidden + layer.mlp(rms_norm(layer.post_attention_layernorm, hidden))
        pieces = hidden.split(MLP_ROWS, dim=1)
        return torch.cat([piece + layer.mlp(rms_norm(layer.post_attention_layernorm, piece)) for piece in pieces], 1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[..., D]` final hidden states -> `[..., V]` float32 logits (call on a few positions only)."""
        flops.through(hidden, self.model.lm_head)
        return self.model.lm_head(hidden).float()

    def token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor, greedy: bool = False):
        """Log p(target) for each position, log-softmax computed `LOGITS_CHUNK` rows at a time.

        Args:
            hidden: `[T, D]` final hidden states.
            targets: `[T]` the token each position predicts.
            greedy: also say, per position, whether the target is the argmax of its logits.

        Returns:
            `[T]` float32 log-probabilities; with `greedy`, a pair of them and `[T]` bools.
        """
        out, top = [], []
        for start in range(0, hidden.shape[0], LOGITS_CHUNK):
            logits = self.logits(hidden[start : start + LOGITS_CHUNK])
            wanted = targets[start : start + LOGITS_CHUNK]
            out.append(logits.gather(-1, wanted[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1))
            if greedy:
                top.append(logits.argmax(-1) == wanted)
        logprobs = torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)
        if not greedy:
            return logprobs
        return logprobs, torch.cat(top) if top else torch.zeros(0, dtype=torch.bool, device=hidden.device)

    def kv_bytes_per_token(self) -> int:
        """Bytes of one token's K and V over all layers in the model dtype."""
        element = self.model.lm_head.weight.element_size()
        return 2 * len(self.layers) * self.n_kv_heads * self.head_dim * element


def join_scores(pieces: list, greedy: bool):
    """Concatenate `token_logprobs` results of consecutive pieces of a document."""
    if not greedy:
        return torch.cat(pieces)
    logprobs, top = zip(*pieces, strict=True)
    return torch.cat(logprobs), torch.cat(top)


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An HF Llama/Mistral/Qwen2 RMSNorm applied to `x`, the same ops in float32 as the module's own forward.

    The module's forward computes in float32 whatever the input; here float64 stays float64, so the
    float64 equivalence tests (gradient strategies against full backpropagation) are exact to float64.
    """
    wide = x if x.dtype == torch.float64 else x.float()
    wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * wide.to(x.dtype)


def scaled_rotary(rotary: nn.Module, config, rope_scaling: dict) -> nn.Module:
    """A new rotary table of the same class as the model's, with `rope_scaling` applied.

    Args:
        rotary: the model's own rotary module (its class computes the tables).
        config: the model config, copied with new `rope_parameters`.
        rope_scaling: `{"rope_type": linear|dynamic|yarn, "factor": s, ...}`; YaRN gets
            `original_max_position_embeddings` from the model config when not given.

    """
    rope_type = rope_scaling.get("rope_type")
    if rope_type not in ROPE_TYPES:
        raise UserError(f"unknown rope_type '{rope_type}'. Valid: {', '.join(ROPE_TYPES)}")
    scaled = copy.deepcopy(config)
    base = dict(getattr(config, "rope_parameters", None) or {})
    theta = base.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    parameters = {"rope_theta": theta, **rope_scaling}
    if rope_type == "yarn":
        parameters.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    scaled.rope_parameters = parameters
    return type(rotary)(scaled).to(rotary.inv_freq.device)

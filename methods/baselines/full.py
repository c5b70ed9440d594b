"""Full causal attention over a growing KV cache, with optional RoPE scaling (PI, dynamic NTK, YaRN)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from methods.attention import causal_attention, rotate
from methods.backbone import scaled_rotary
from methods.base import MethodConfig, register_method
from methods.decoder import DecoderMethod
from methods.kv_buffer import KVBuffer


class FullConfig(MethodConfig):
    """Full attention. `rope_scaling` follows HF semantics (PI, dynamic NTK, YaRN).

    `rope_factor: auto` fits the factor to each document: its length (the prompt's, for generation)
    over the model's trained window, with no scaling when it fits (the training-free control beside
    every method run past the trained window; YaRN's own choice of factor).

    Deviations: prefill runs in chunks of `chunk_size` tokens (exact up to float rounding); with
    `dynamic` scaling, keys cached by an earlier chunk keep their earlier rotation, as in HF's cached
    generation, so chunked and one-shot numbers differ slightly for inputs past the trained length.
    """

    rope_scaling: Literal["none", "linear", "dynamic", "yarn"] = "none"
    rope_factor: float | Literal["auto"] = 1.0
    chunk_size: int = 2048

    @model_validator(mode="after")
    def _check(self) -> FullConfig:
        if self.rope_factor == "auto":
            if self.rope_scaling == "none":
                raise ValueError("rope_factor=auto needs rope_scaling linear, dynamic or yarn")
        elif self.rope_scaling != "none" and self.rope_factor <= 1.0:
            raise ValueError(f"rope_scaling={self.rope_scaling} needs rope_factor > 1 (got {self.rope_factor})")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        return self


class FullAttention:
    """Per-layer KV cache of rotated keys; every query sees every earlier token."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone
        self.cache = [KVBuffer() for _ in backbone.layers]

    def attend(self, layer, q, k, v, positions):
        """Rotate at absolute positions, append to the cache, attend causally."""
        cos, sin = self.backbone.rope(positions)
        buffer = self.cache[layer]
        buffer.append(rotate(k, cos, sin), v)
        return self.over_cache(rotate(q, cos, sin), buffer, positions)

    def over_cache(self, q, buffer: KVBuffer, positions):
        """The rotated queries over every cached key, causally (subclasses restrict which keys they see)."""
        return causal_attention(q, buffer.k, buffer.v, self.backbone.scale)

    def nbytes(self) -> int:
        """Bytes of K and V held over all layers."""
        return sum(buffer.nbytes() for buffer in self.cache)


@register_method("full")
class Full(DecoderMethod):
    """Full attention, the reference every other method is compared to."""

    description = "full causal attention over the whole input (optional RoPE scaling: linear/dynamic/yarn)"
    sources = (
        "RoPE scaling: Position Interpolation, Chen et al. 2023, https://arxiv.org/abs/2306.15595; YaRN, Peng et al. "
        "2023, https://arxiv.org/abs/2309.00071; dynamic NTK as implemented in Hugging Face transformers."
    )
    Config = FullConfig

    def __init__(self, model, tokenizer, config: FullConfig):
        scaling = None
        if config.rope_scaling != "none" and config.rope_factor != "auto":
            scaling = {"rope_type": config.rope_scaling, "factor": config.rope_factor}
        super().__init__(model, tokenizer, config, rope_scaling=scaling)
        self.unscaled = self.backbone.rotary

    def fit(self, length: int) -> None:
        """With `rope_factor: auto`, scale RoPE for a document (or prompt) of `length` tokens."""
        if self.config.rope_factor != "auto":
            return
        factor = length / self.model.config.max_position_embeddings
        scaling = {"rope_type": self.config.rope_scaling, "factor": factor}
        self.backbone.rotary = scaled_rotary(self.unscaled, self.model.config, scaling) if factor > 1 else self.unscaled

    def beyond_trained_window(self, length: int) -> bool:
        """RoPE scaling by `rope_factor` stretches the trained window by that factor (`auto`: to the input)."""
        if self.config.rope_factor == "auto":
            return False
        return length > self.model.config.max_position_embeddings * self.config.rope_factor

    def new_attention(self) -> FullAttention:
        """A fresh, empty KV cache."""
        return FullAttention(self.backbone)

    def attention_bytes(self) -> int:
        """Bytes of the KV cache."""
        return self.attention.nbytes()

"""UIO-LLMs configuration: the paper's 7B defaults, and a scaled preset for small models."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.core.checkpoint_files import checked_directory
from methods.base import MethodConfig


class UIOConfig(MethodConfig):
    """UIO-LLMs (Li et al., 2024, arXiv 2406.18173; code wenhaoli-xmu/UIO-LLMs).

    Defaults are the paper's Llama-2-7B setting (`config/32x.json`): segments of 1024 tokens compressed
    into 32 memory tokens (32x), LoRA r=128, alpha=512, dropout 0 on the encoder (q_proj, v_proj) and
    on the transfer head (k_proj, v_proj). For small models use `UIOConfig.small()` (segment 512,
    16 memory tokens, r=16, alpha=64: the same 32x ratio, LoRA scaled with the hidden size, same
    alpha/r = 4) -- a preset of ours, not the paper's.

    `window` is the decoder's position budget (memory + raw segment); None = the base model's
    `max_position_embeddings` (4096 for Llama-2 gives the paper's 99,328-token limit at 32x).
    `over_context`: `error` (default; the official code has no eviction) or `keep_recent`, which
    drops the oldest segment memories, renumbers the rest from position 0 and decodes the open segment
    again over them, so the state is the one rebuilt from the kept memories -- an lch extension.
    `memory`: False drops the memory (the no-memory control): each segment is decoded alone, from
    position 0, exactly full attention over disjoint windows of `segment` tokens; the encoder never runs.
    `checkpoint`: a directory written by `UIO.save` (adapters + `<mem>` embedding); without it the
    adapters are at their zero initialisation (B = 0), i.e. an untrained UIO.

    Deviations from the official code, each equivalent or an optimisation unless noted:
    one frozen base model with adapters kept outside it (the official code deep-copies the model
    three times); the encoder stops at the last layer's attention input (the official code runs the
    whole model and the LM head); memory K/V are computed once per segment and cached (the official
    code recomputes them on every decoder call, every generated token included); text queries and
    K/V use the frozen weights, as in the official decoder. Not equivalent for every model: the
    encoder's attention scales its scores by 1/sqrt(head_dim), where the official encoder
    (`src/modifiers/modify_llama_ccf.py`, `do_encoder_attn`) hard-codes 1/sqrt(128). They agree for
    128-dim heads (Llama-2-7B, the paper's model) and not for SmolLM2's 64-dim heads, where 1/sqrt(128)
    would soften every encoder softmax from the base model's own; lch keeps the decoder's scale, which is
    what the official constant is for the paper's model.
    """

    segment: int = 1024
    memory_tokens: int = 32
    lora_rank: int = 128
    lora_alpha: int = 512
    window: int | None = None
    over_context: Literal["error", "keep_recent"] = "error"
    encode_batch: int = 8
    memory: bool = True
    checkpoint: str | None = None
    checkpoint_fields: ClassVar[tuple[str, ...]] = ("checkpoint",)
    checkpoint_options: ClassVar[tuple[str, ...]] = ("segment", "memory_tokens", "lora_rank", "lora_alpha")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, checkpoint: str | None) -> str | None:
        return checked_directory(checkpoint, "UIO")

    @model_validator(mode="after")
    def _check(self) -> UIOConfig:
        if self.segment < 1 or self.memory_tokens < 1 or self.segment % self.memory_tokens:
            raise ValueError(
                f"segment ({self.segment}) must be a positive multiple of memory_tokens ({self.memory_tokens})"
            )
        if self.lora_rank < 1 or self.encode_batch < 1:
            raise ValueError("lora_rank and encode_batch must be >= 1")
        if self.window is not None and self.window < self.segment + self.memory_tokens:
            raise ValueError(f"window ({self.window}) must hold at least one memory and one segment")
        return self

    @classmethod
    def small(cls, **overrides) -> UIOConfig:
        """Preset for ~100M-parameter models (SmolLM2-135M): 32x compression of 512-token segments."""
        return cls(**{"segment": 512, "memory_tokens": 16, "lora_rank": 16, "lora_alpha": 64, **overrides})

    def max_context(self, window: int) -> int | None:
        """Longest input under `error`: memory of every full segment plus one raw segment fits `window`."""
        if self.over_context == "keep_recent" or not self.memory:
            return None
        return (window - self.segment) // self.memory_tokens * self.segment + self.segment


Strategy = Literal["bptt", "tbptt", "incremental", "unbiased"]
STRATEGIES: tuple[str, ...] = Strategy.__args__


class UIOTrainConfig(BaseModel):
    """How a document's gradient reaches the encoder (methods/uio/trainer.py) and the window S.

    Defaults: the paper's `unbiased` with S = 2 (official `tbptt: 2`) and its compensation factor
    max(1, k/S) (Eq. 12). `compensation=False` is what the official `train.py` runs: the same reservoir
    without the factor, a biased gradient (stored in `training.json` like every train option).
    `objective`: `lm` (language modelling over the document's segments) or `autoencode` (the paper's
    auto-encoding task: each segment decoded back from its own memory, `methods/uio/autoencode.py`).
    `transfer_lr_scale`: the transfer head's learning rate as a multiple of `--lr` (not in the official
    code, which trains both LoRAs at one rate): the head starts from zero LoRA, and its KV is all the
    decoder reads of the memory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "unbiased"
    window: int = Field(2, ge=1)
    compensation: bool = True
    objective: Literal["lm", "autoencode"] = "lm"
    transfer_lr_scale: float = Field(1.0, gt=0)

"""LongLoRA: full attention with linear position interpolation, fine-tuned with S²-Attn and LoRA+.

Chen et al. 2023 (https://arxiv.org/abs/2309.12307); code dvlab-research/LongLoRA (`fine-tune.py`,
`llama_attn_replace.py`). Training runs the decoder with shifted sparse attention
(`methods.baselines.s2_attn`) and LoRA+: LoRA on q, k, v, o plus trainable input embeddings and every
norm (`trainable_params="embed,norm"`), RoPE interpolated linearly by ceil(training length / trained
window). Inference is plain full attention with that interpolation (the maintainers: S²-Attn is for
training only, issue #14); `attention: s2` runs S²-Attn at inference too (the paper's ablation, not the
official evaluation), and results say so in the method's label. The trained modules are the method's
own (`methods.parts.Parts`); the shared base model is never written.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.core.checkpoint_files import checked_directory
from harness.core.errors import UserError
from methods.attention import causal_attention, rotate
from methods.backbone import Backbone
from methods.base import MethodConfig, register_method
from methods.baselines.full import FullAttention
from methods.baselines.s2_attn import group_size, s2_attention, s2_cached_attention
from methods.decoder import DecoderMethod
from methods.parts import PROJECTIONS, Parts
from methods.token_loss import TokenLoss

WEIGHTS_FILE = "longlora.safetensors"


class LongLoRAConfig(MethodConfig):
    """LongLoRA at inference: full attention, RoPE interpolated by `rope_factor`, with the checkpoint's LoRA+.

    Official defaults: LoRA r=8, alpha=16 on q, k, v, o (`fine-tune.py`). `rope_factor`: the linear
    position-interpolation factor; None takes the checkpoint's, and without a checkpoint is 1 (the base
    model as it is, LoRA at zero). Training sets it to ceil(longest training length / trained window)
    when left out, as the official scripts do, and writes it into the checkpoint. `attention`: `full`
    (official) or `s2`, S²-Attn at inference with groups of `group_ratio` of the document (of the prompt,
    for generation; decoded tokens continue its groups). `trainable_params`: what trains beside LoRA, as
    the official flag of that name: `embed,norm` (LoRA+, the default) or `norm`. The embedded model's input
    embedding is 21% of its weights (2% of Llama-2-7B's), so `norm` keeps a small recipe's checkpoint at a
    few MB instead of 113 MB; a checkpoint records which it trained.

    Deviation: the official tokenizer step adds a `[PAD]` token and resizes the embeddings (Llama has no
    pad token); lch packs documents without padding, so the vocabulary is left as it is.
    """

    checkpoint: str | None = None
    rope_factor: float | None = Field(None, ge=1.0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    chunk_size: int = Field(2048, ge=1)
    attention: Literal["full", "s2"] = "full"
    group_ratio: float = Field(0.25, gt=0, le=1)
    trainable_params: Literal["embed,norm", "norm"] = "embed,norm"
    checkpoint_fields: ClassVar[tuple[str, ...]] = ("checkpoint",)
    checkpoint_options: ClassVar[tuple[str, ...]] = ("rope_factor", "lora_rank", "lora_alpha", "trainable_params")
    later_options: ClassVar[tuple[str, ...]] = ("trainable_params",)

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, checkpoint: str | None) -> str | None:
        return checked_directory(checkpoint, "LongLoRA")

    @field_validator("trainable_params", mode="before")
    @classmethod
    def _joined(cls, value):
        """`--method-opt trainable_params=embed,norm` arrives as a list (the CLI's a,b): the flag's own spelling."""
        return ",".join(map(str, value)) if isinstance(value, list | tuple) else value


class LongLoRATrainConfig(BaseModel):
    """How the decoder attends in training: S²-Attn (official) with groups of `group_ratio` of the document.

    `rolled`: the official non-flash variant, whose last shifted group wraps around (half the heads of
    the first G/2 tokens see the document's end, issue #15); default: the flash path's semantics, no
    wrap-around. `attention: full` trains with full causal attention (LongLoRA's "full fine-tuning
    attention" ablation, and the cost control for S²-Attn).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attention: str = Field("s2", pattern="^(s2|full)$")
    group_ratio: float = Field(0.25, gt=0, le=1)
    rolled: bool = False


class TrainingAttention:
    """Attention of one whole training document, no cache: S²-Attn or full causal attention."""

    def __init__(self, backbone: Backbone, length: int, config: LongLoRATrainConfig):
        self.backbone = backbone
        self.group = group_size(length, config.group_ratio) if config.attention == "s2" else None
        self.rolled = config.rolled

    def attend(self, layer, q, k, v, positions):
        """RoPE before any shift (official), then the grouped attention."""
        cos, sin = self.backbone.rope(positions)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if self.group is None:
            return causal_attention(q, k, v, self.backbone.scale)
        return s2_attention(q, k, v, self.group, self.backbone.scale, rolled=self.rolled)


class InferenceS2Attention(FullAttention):
    """S²-Attn over the KV cache (default variant), groups sized by `fit` for each document."""

    def __init__(self, backbone: Backbone, ratio: float):
        super().__init__(backbone)
        self.ratio = ratio
        self.group = 2

    def fit(self, length: int) -> None:
        """Size the groups for a document (or prompt) of `length` tokens."""
        self.group = group_size(length, self.ratio)

    def over_cache(self, q, buffer, positions):
        """The rotated queries over the cached keys of their groups."""
        return s2_cached_attention(q, buffer.k, buffer.v, positions, self.group, self.backbone.scale)


@register_method("longlora")
class LongLoRA(DecoderMethod):
    """LongLoRA: full attention with position interpolation, after S²-Attn + LoRA+ fine-tuning."""

    description = "LongLoRA: full attention with linear RoPE interpolation, fine-tuned with S2-Attn and LoRA+"
    sources = (
        "LongLoRA, Chen et al. 2023, https://arxiv.org/abs/2309.12307; https://github.com/dvlab-research/LongLoRA."
    )
    Config = LongLoRAConfig
    TrainConfig = LongLoRATrainConfig
    # fine-tune.py's README command: lr 2e-5, weight decay 0, constant_with_warmup with 20 of 1,000 steps, and
    # gradient checkpointing (without it a 16K document's activations took 24 GB on SmolLM2-135M, OOM-killed)
    TRAINING_DEFAULTS: ClassVar[dict] = {
        "lr": 2e-5, "weight_decay": 0.0, "warmup": 0.02, "schedule": "constant", "activation_checkpointing": True,
    }  # fmt: skip

    def __init__(self, model, tokenizer, config: LongLoRAConfig):
        self.factor = config.rope_factor or 1.0
        self.parts = Parts(
            model,
            PROJECTIONS,
            config.lora_rank,
            config.lora_alpha,
            adapter="longlora",
            norms=True,
            embedding="embed" in config.trainable_params.split(","),
        ).to(model.lm_head.weight.device)
        if config.checkpoint:
            self.parts.load(f"{config.checkpoint}/{WEIGHTS_FILE}", "LongLoRA checkpoint")
        scaling = {"rope_type": "linear", "factor": self.factor} if self.factor > 1 else None
        self.train_config = LongLoRATrainConfig()
        super().__init__(model, tokenizer, config, rope_scaling=scaling, parts=self.parts)

    def new_attention(self) -> FullAttention:
        """Full attention over a KV cache (with the interpolated RoPE of the backbone), or S²-Attn when asked."""
        if self.config.attention == "s2":
            return InferenceS2Attention(self.backbone, self.config.group_ratio)
        return FullAttention(self.backbone)

    def fit(self, length: int) -> None:
        """S²-Attn at inference sizes its groups for the document (or prompt) about to start."""
        if isinstance(self.attention, InferenceS2Attention):
            self.attention.fit(length)

    @property
    def variant(self) -> str | None:
        """S²-Attn at inference is not LongLoRA's evaluation: results carry it in the label."""
        return "S2-Attn at inference" if self.config.attention == "s2" else None

    def attention_bytes(self) -> int:
        """Bytes of the KV cache."""
        return self.attention.nbytes()

    @property
    def untrained(self) -> bool:
        """Without a checkpoint LoRA is at zero and the copies are the base's: the base model, maybe interpolated."""
        return self.config.checkpoint is None

    def beyond_trained_window(self, length: int) -> bool:
        """Interpolation by `rope_factor` stretches the base model's window by that factor."""
        return length > self.model.config.max_position_embeddings * self.factor

    @classmethod
    def training_options(cls, options: dict, longest: int, trained_window: int) -> dict:
        """The official factor for training on `longest`-token documents, unless given: ceil(longest / window)."""
        if options.get("rope_factor") is not None or longest <= trained_window:
            return options
        return {**options, "rope_factor": float(math.ceil(longest / trained_window))}

    @classmethod
    def check_document_length(cls, config: LongLoRAConfig, seq_len: int, trained_window: int | None = None) -> None:
        """A training document is at least two tokens; past the interpolated window is refused."""
        if seq_len < 2:
            raise UserError(f"documents of {seq_len} tokens: a training document needs at least 2")
        if trained_window is not None and config.rope_factor and seq_len > trained_window * config.rope_factor:
            raise UserError(
                f"documents of {seq_len} tokens are past the interpolated window "
                f"{trained_window} x {config.rope_factor}"
            )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """LoRA+ : LoRA on q, k, v, o, the input embedding (unless `trainable_params=norm`) and every norm.

        `lm_head` stays frozen.
        """
        return self.parts.trainable_parameters()

    def trained_extent(self, seq_len: int) -> dict[str, int]:
        """Training showed the weights documents of `seq_len` tokens."""
        return {"longest_document": seq_len}

    def backward_document(self, input_ids: torch.Tensor, token_loss: TokenLoss | None = None) -> float:
        """One document under the training attention, its loss backpropagated and returned.

        Args:
            input_ids: `[T]` token ids.
            token_loss: which predictions count and against what (`methods.token_loss`); None: every
                token's NLL (the official fine-tuning loss, the mean over the T - 1 predictions).
        """
        ids = input_ids.to(self.backbone.device)
        token_loss = token_loss or TokenLoss.every_token(ids)
        positions = torch.arange(ids.numel(), device=ids.device)
        attention = TrainingAttention(self.backbone, ids.numel(), self.train_config)
        hidden = self.backbone(self.backbone.embed(ids[None]), positions, attention)[0]
        loss = token_loss.stretch(self.backbone, hidden[:-1], 1) / token_loss.total
        if loss.requires_grad:  # a document with no weighted prediction has no gradient
            loss.backward()
        return float(loss.detach())

    def save(self, directory) -> None:
        """Write LoRA, norms and the embedding when it trains (safetensors)."""
        self.parts.save(f"{directory}/{WEIGHTS_FILE}")

    def load(self, directory) -> None:
        """Load what `save` wrote."""
        self.parts.load(f"{directory}/{WEIGHTS_FILE}", "LongLoRA checkpoint")

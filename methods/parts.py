"""A method's own modules for parts of the shared frozen base model: the one mechanism UIO, LongLoRA and RMT use.

Every cell of a sweep shares one frozen HF model (`harness.models.load_model`), and a method never
writes into it. `Parts` is a container that mirrors the model's module names
(`layers.{i}.self_attn.q_proj`, `layers.{i}.mlp`, `layers.{i}.input_layernorm`, `norm`, `embed_tokens`):

* the attention projections it names are *references* to the base modules, into which peft injects
  LoRA (peft's wrapper keeps the shared Linear as its frozen `base_layer` and adds `lora_A`/`lora_B`);
* norms and the input embedding, when asked for, are the method's own trainable copies, initialised
  from the base's;
* with `own_layers`, every decoder layer's four projections and its MLP are own trainable copies too
  (full fine-tuning beside the shared base: RMT's `trainable: full`).

`Backbone(model, parts=...)` runs the decoder with the container's modules where it has them (LongLoRA, RMT);
UIO calls its encoder and transfer containers itself. A checkpoint is the container's trainable tensors
in one safetensors file, LoRA keys without the adapter name (peft's own state-dict format).

Tied embeddings (SmolLM2 ties the output layer to the input embedding): an owned input embedding is a
copy, so training it leaves the output layer as the base model's, frozen, as LongLoRA's recipe keeps
`lm_head` frozen on untied Llama-2.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from torch import nn

from harness.core.errors import UserError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")


class Parts(nn.Module):
    """Own modules for parts of `model`: LoRA on the named projections, trainable norms and input embedding.

    Args:
        model: the frozen HF causal LM (Llama family).
        lora_targets: projections of every layer that get LoRA (of `PROJECTIONS`).
        rank: LoRA rank r.
        alpha: LoRA alpha (scale alpha / r).
        adapter: the peft adapter name (kept out of saved keys).
        norms: own copies of every RMSNorm (both of each layer, and the final one).
        embedding: an own copy of the input embedding.
        own_layers: own copies of every layer's q, k, v, o projections and MLP (no LoRA then).
    """

    def __init__(
        self,
        model: nn.Module,
        lora_targets: Sequence[str] = (),
        rank: int = 8,
        alpha: int = 16,
        adapter: str = "default",
        norms: bool = False,
        embedding: bool = False,
        own_layers: bool = False,
    ):
        super().__init__()
        unknown = sorted(set(lora_targets) - set(PROJECTIONS))
        if unknown:
            raise ValueError(f"LoRA targets {unknown} are not projections. Valid: {', '.join(PROJECTIONS)}")
        if own_layers and lora_targets:
            raise ValueError("own_layers copies every projection: LoRA targets make no sense with it")
        self.adapter = adapter
        inner = model.model
        self.layers = nn.ModuleList()
        for layer in inner.layers:
            holder, attention = nn.Module(), nn.Module()
            for name in lora_targets:
                setattr(attention, name, getattr(layer.self_attn, name))
            holder.self_attn = attention
            self.layers.append(holder)
        if lora_targets:
            config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(lora_targets))
            # peft marks every parameter but LoRA's frozen, so the own copies below come after it.
            inject_adapter_in_model(config, self, adapter_name=adapter)
        if own_layers:
            for holder, layer in zip(self.layers, inner.layers, strict=True):
                for name in PROJECTIONS:
                    setattr(holder.self_attn, name, _own(getattr(layer.self_attn, name)))
                holder.mlp = _own(layer.mlp)
        if norms:
            for holder, layer in zip(self.layers, inner.layers, strict=True):
                for name in LAYER_NORMS:
                    setattr(holder, name, _own(getattr(layer, name)))
            self.norm = _own(inner.norm)
        if embedding:
            self.embed_tokens = _own(inner.embed_tokens)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights and own copies (the referenced base weights are frozen and excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor by its key in the container, LoRA keys without the adapter name."""
        return {self._key(name): p for name, p in self.named_parameters() if p.requires_grad}

    def save(self, path: str | Path) -> None:
        """Write the trainable tensors to one safetensors file."""
        save_file({k: v.detach().contiguous().cpu() for k, v in self.trainable_state().items()}, str(path))

    def load(self, path: str | Path, what: str) -> None:
        """Load what `save` wrote; a missing, unreadable or mismatched file is a one-line error naming `what`."""
        state = read_tensors(path, what)
        own = self.trainable_state()
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
        if missing or unexpected:
            problem = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which this model lacks"
            raise UserError(f"{what} '{Path(path).parent}' does not match this model: {Path(path).name} {problem}")
        with torch.no_grad():
            for key, tensor in own.items():
                if tensor.shape != state[key].shape:
                    raise UserError(
                        f"{what} '{Path(path).parent}' does not match this model: {key} is {tuple(state[key].shape)}, "
                        f"expected {tuple(tensor.shape)}"
                    )
                tensor.copy_(state[key])

    def _key(self, name: str) -> str:
        return name.replace(f".{self.adapter}.", ".") if ".lora_" in name else name


def _own(module: nn.Module) -> nn.Module:
    """A trainable copy of a frozen base module."""
    return copy.deepcopy(module).requires_grad_(True)


def read_tensors(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file of a checkpoint; missing or unreadable: a one-line error naming `what`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path.parent}' has no {path.name}")
    try:
        return load_file(path)
    except Exception as error:  # noqa: BLE001 - truncated files, random bytes: the user's
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{what} '{path.parent}' cannot be loaded: {path.name}: {reason}") from None

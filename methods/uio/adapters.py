"""UIO's trainable parts, kept outside the shared frozen model: two LoRA adapters, the `<mem>` and repeat embeddings.

peft wraps the base model's q/k/v projections inside containers of our own, so the HF model (shared by
every method of a sweep) is never modified, and the adapters are standard peft state dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from harness.errors import UserError

ENCODER_TARGETS = ["q_proj", "v_proj"]
TRANSFER_TARGETS = ["k_proj", "v_proj"]
FILES = {"encoder": "encoder_adapter.safetensors", "transfer": "transfer_adapter.safetensors"}
MEMORY_FILE = "memory_embedding.safetensors"


def _projections(layers: nn.ModuleList) -> nn.Module:
    """Container `layers[i].self_attn.{q,k,v}_proj` referencing (not copying) the base projections."""
    container = nn.Module()
    container.layers = nn.ModuleList()
    for layer in layers:
        attention = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(attention, name, getattr(layer.self_attn, name))
        holder = nn.Module()
        holder.self_attn = attention
        container.layers.append(holder)
    return container


class UIOAdapters(nn.Module):
    """Encoder LoRA (q, v), transfer-head LoRA (k, v), the learned `<mem>` embedding and the repeat token.

    The repeat token (official code: initialised from `</s>` like `<mem>`) starts the decoder's
    reconstruction of a segment from its memory alone (the auto-encoding check); language modelling
    never uses it, so it only trains under the auto-encoding objective.

    Args:
        model: the frozen HF causal LM.
        rank: LoRA rank r.
        alpha: LoRA alpha (scale alpha / r).
        eos_token_id: the `<mem>` embedding starts as this token's embedding (official: `</s>`).
    """

    def __init__(self, model: nn.Module, rank: int, alpha: int, eos_token_id: int):
        super().__init__()
        layers = model.model.layers
        self.encoder = self._lora(_projections(layers), ENCODER_TARGETS, rank, alpha, "encoder")
        self.transfer = self._lora(_projections(layers), TRANSFER_TARGETS, rank, alpha, "transfer")
        embedding = model.model.embed_tokens.weight
        self.memory_embedding = nn.Parameter(embedding[eos_token_id].detach().clone())
        self.repeat_embedding = nn.Parameter(embedding[eos_token_id].detach().clone())

    @staticmethod
    def _lora(container: nn.Module, targets: list[str], rank: int, alpha: int, name: str) -> nn.Module:
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
        return inject_adapter_in_model(config, container, adapter_name=name)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights of both adapters and the `<mem>` embedding (the frozen base is excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def save(self, directory: str | Path) -> None:
        """Write both adapters and the `<mem>` embedding as safetensors under `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, file in FILES.items():
            state = get_peft_model_state_dict(getattr(self, name), adapter_name=name)
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, directory / file)
        embeddings = {"memory_embedding": self.memory_embedding, "repeat_embedding": self.repeat_embedding}
        save_file({k: v.detach().cpu() for k, v in embeddings.items()}, directory / MEMORY_FILE)
        (directory / "adapters.json").write_text(json.dumps({"encoder": ENCODER_TARGETS, "transfer": TRANSFER_TARGETS}))

    def load(self, directory: str | Path) -> None:
        """Load what `save` wrote; a missing file is a one-line user error."""
        directory = Path(directory)
        for file in [*FILES.values(), MEMORY_FILE]:
            if not (directory / file).is_file():
                raise UserError(f"UIO checkpoint '{directory}' has no {file} (written by the UIO trainer / UIO.save)")
        device = self.memory_embedding.device
        try:
            for name, file in FILES.items():
                result = set_peft_model_state_dict(
                    getattr(self, name), load_file(directory / file, device=str(device)), adapter_name=name
                )
                if result.unexpected_keys:
                    raise UserError(
                        f"UIO checkpoint '{directory}' does not match this model: {result.unexpected_keys[0]}"
                    )
            embeddings = load_file(directory / MEMORY_FILE)
            with torch.no_grad():
                self.memory_embedding.copy_(embeddings["memory_embedding"])
                if "repeat_embedding" in embeddings:  # checkpoints from before the auto-encoding check lack it
                    self.repeat_embedding.copy_(embeddings["repeat_embedding"])
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - truncated files, wrong shapes, missing keys: all the user's
            raise UserError(f"UIO checkpoint '{directory}' cannot be loaded: {_first_problems(error)}") from None


def _first_problems(error: Exception, lines: int = 2) -> str:
    """The error's first `lines` informative lines (a state-dict error lists every mismatched tensor)."""
    text = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    more = f" (and {len(text) - lines} more)" if len(text) > lines else ""
    return " ".join(text[:lines]) + more

"""UIO's trainable parts, kept outside the shared frozen model: two LoRA adapters, the `<mem>` and repeat embeddings.

The encoder and the transfer head are `methods.parts.Parts` containers: LoRA on references to the base
model's projections, so the HF model (shared by every method of a sweep) is never modified, and the
adapters are standard peft state dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from harness.core.errors import UserError
from methods.parts import Parts, read_tensors

ENCODER_TARGETS = ["q_proj", "v_proj"]
TRANSFER_TARGETS = ["k_proj", "v_proj"]
FILES = {"encoder": "encoder_adapter.safetensors", "transfer": "transfer_adapter.safetensors"}
MEMORY_FILE = "memory_embedding.safetensors"
WHAT = "UIO checkpoint"


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
        self.encoder = Parts(model, ENCODER_TARGETS, rank, alpha, adapter="encoder")
        self.transfer = Parts(model, TRANSFER_TARGETS, rank, alpha, adapter="transfer")
        embedding = model.model.embed_tokens.weight
        self.memory_embedding = nn.Parameter(embedding[eos_token_id].detach().clone())
        self.repeat_embedding = nn.Parameter(embedding[eos_token_id].detach().clone())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA weights of both adapters and the `<mem>` embedding (the frozen base is excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def save(self, directory: str | Path) -> None:
        """Write both adapters and the `<mem>` embedding as safetensors under `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, file in FILES.items():
            getattr(self, name).save(directory / file)
        embeddings = {"memory_embedding": self.memory_embedding, "repeat_embedding": self.repeat_embedding}
        save_file({k: v.detach().cpu() for k, v in embeddings.items()}, directory / MEMORY_FILE)
        (directory / "adapters.json").write_text(json.dumps({"encoder": ENCODER_TARGETS, "transfer": TRANSFER_TARGETS}))

    def load(self, directory: str | Path) -> None:
        """Load what `save` wrote; a missing or broken file is a one-line user error."""
        directory = Path(directory)
        for name, file in FILES.items():
            getattr(self, name).load(directory / file, WHAT)
        embeddings = read_tensors(directory / MEMORY_FILE, WHAT)
        # checkpoints from before the auto-encoding check lack the repeat token
        for name in ("memory_embedding", "repeat_embedding")[: 1 + ("repeat_embedding" in embeddings)]:
            own, stored = getattr(self, name), embeddings.get(name)
            if stored is None or stored.shape != own.shape:
                raise UserError(f"{WHAT} '{directory}' does not match this model: {MEMORY_FILE} {name}")
            with torch.no_grad():
                own.copy_(stored)

"""Cramming (Kuratov et al. 2025, arXiv 2502.13063): one text's memory optimised through a method's read path.

The model and the method's adapters stay frozen; only the memory a decoder reads is optimised, for one
text, so that the decoder, teacher-forced, predicts the text's tokens. A read path that works carries the
text: the paper decodes 80 PG19 tokens losslessly from one input vector of Pythia-160M (hidden 768;
SmolLM2-135M's is 576), and about linearly more from more vectors. A path that cannot reach 100 % token
accuracy with a few vectors per text has a defect (mask, positions, scale) that no training fixes.

Official procedure (yurakuratov/hidden_capacity, `train.py`): AdamW, lr 1e-2, betas (0.9, 0.9), weight decay
0.01, at most 5,000 steps, stopped at 100 % accuracy or after 2,000 steps without improvement; its memory is
input vectors before the text. The read paths here:

* `rmt_read`: RMT's read memory, `[m, D]` vectors before the segment (as the paper's, through RMT's own
  `memory_cell`), starting from the method's memory;
* `rmt_written_read`: RMT's read memory one segment earlier: a carrier segment reads it and writes the
  memory the text's segment reads, so what reaches the text passed through the frozen write path once;
* `uio_states_read`: UIO's per-layer memory states `[L, m, D]` that its transfer head turns into the
  decoder's K/V, starting from what the encoder writes for the text;
* `uio_inputs_read`: UIO's `<mem>` input embeddings `[m, D]` of the encoder, which then writes the states
  (the whole path: encoder, transfer head, decoder), starting from the learned `<mem>` in every slot.

The no-memory value of each is the same decoder over the text without memory: the model's own
teacher-forced next-token accuracy on those tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from methods.backbone import Backbone
from methods.baselines.rmt import RMT, memory_cell
from methods.uio.memory import encode
from methods.uio.model import UIO
from methods.uio.trainer import segment_hidden


@dataclass(frozen=True)
class ReadPath:
    """What is optimised (`memory`) and how the decoder reads a text through it.

    `hidden()` and `no_memory()` give the `[l - 1, D]` final hidden states that predict the text's tokens
    1..l-1, with the current memory and without any.
    """

    name: str
    backbone: Backbone
    memory: nn.Parameter
    hidden: Callable[[], torch.Tensor]
    no_memory: Callable[[], torch.Tensor]


def rmt_read(method: RMT, ids: torch.Tensor) -> ReadPath:
    """RMT's read memory before the segment `ids` (`[l]`), through its memory cell without write slots."""
    backbone = method.backbone
    memory = nn.Parameter(method.memory.detach().clone())
    embeds = backbone.embed(ids)
    return ReadPath(
        "rmt read memory",
        backbone,
        memory,
        lambda: memory_cell(backbone, memory, embeds, write=False)[0][:-1],
        lambda: _segment_alone(backbone, embeds),
    )


def rmt_written_read(method: RMT, ids: torch.Tensor, carrier: torch.Tensor) -> ReadPath:
    """RMT's read memory of a `carrier` segment (`[S]` ids), whose written memory the segment `ids` reads."""
    backbone = method.backbone
    memory = nn.Parameter(method.memory.detach().clone())
    embeds, carried = backbone.embed(ids), backbone.embed(carrier)

    def hidden() -> torch.Tensor:
        _, written = memory_cell(backbone, memory, carried)
        return memory_cell(backbone, written, embeds, write=False)[0][:-1]

    return ReadPath("rmt memory through a write", backbone, memory, hidden, lambda: _segment_alone(backbone, embeds))


def _segment_alone(backbone: Backbone, embeds: torch.Tensor) -> torch.Tensor:
    """RMT's memory cell over the segment with no memory: the decoder on the text alone."""
    return memory_cell(backbone, embeds[:0], embeds, write=False)[0][:-1]


def uio_states_read(method: UIO, ids: torch.Tensor) -> ReadPath:
    """UIO's per-layer memory states of the segment `ids`, read through the transfer head by the decoder."""
    backbone, adapters = method.backbone, method.adapters
    with torch.no_grad():
        start = encode(backbone, adapters, ids[None], method.config.memory_tokens)[:, 0]
    states = nn.Parameter(start.clone())
    return ReadPath(
        "uio memory states",
        backbone,
        states,
        lambda: segment_hidden(backbone, adapters, ids, [states])[:-1],
        lambda: segment_hidden(backbone, adapters, ids, [])[:-1],
    )


def uio_inputs_read(method: UIO, ids: torch.Tensor) -> ReadPath:
    """UIO's `<mem>` input embeddings: the encoder reads the segment `ids` and them, the decoder its states."""
    backbone, adapters, m = method.backbone, method.adapters, method.config.memory_tokens
    inputs = nn.Parameter(adapters.memory_embedding.detach().expand(m, -1).clone())
    return ReadPath(
        "uio <mem> inputs",
        backbone,
        inputs,
        lambda: segment_hidden(backbone, adapters, ids, [encode(backbone, adapters, ids[None], m, inputs)[:, 0]])[:-1],
        lambda: segment_hidden(backbone, adapters, ids, [])[:-1],
    )


@dataclass(frozen=True)
class Schedule:
    """The official optimiser and stopping rule (`hidden_capacity/train.py`)."""

    lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.01
    steps: int = 5000
    patience: int = 2000


@dataclass
class Crammed:
    """The outcome: token accuracy with the optimised memory and without memory, and the curve."""

    path: str
    tokens: int
    memory_shape: tuple[int, ...]
    accuracy: float
    no_memory_accuracy: float
    steps: int
    curve: list[dict] = field(default_factory=list)


def accuracy_and_loss(path: ReadPath, ids: torch.Tensor, hidden: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Teacher-forced accuracy on ids[1:] and the mean NLL (with its graph)."""
    logprobs, top = path.backbone.token_logprobs(hidden, ids[1:], greedy=True)
    return float(top.float().mean()), -logprobs.mean()


def cram(path: ReadPath, ids: torch.Tensor, schedule: Schedule = Schedule(), log_every: int = 50) -> Crammed:
    """Optimise `path.memory` until the decoder predicts every token of `ids` or the schedule ends."""
    with torch.no_grad():
        baseline, _ = accuracy_and_loss(path, ids, path.no_memory())
    optimizer = torch.optim.AdamW(
        [path.memory], lr=schedule.lr, betas=schedule.betas, weight_decay=schedule.weight_decay
    )
    best, since, curve, step, reproduced = -1.0, 0, [], 0, False
    for step in range(1, schedule.steps + 1):
        with torch.enable_grad():
            accuracy, loss = accuracy_and_loss(path, ids, path.hidden())
            if accuracy == 1.0:  # measured before this step's update: the memory as it stands reproduces the text
                curve.append({"step": step - 1, "accuracy": accuracy, "loss": float(loss.detach())})
                step, reproduced = step - 1, True
                break
            (grad,) = torch.autograd.grad(loss, [path.memory])  # the method's own weights get no gradient
        path.memory.grad = grad
        optimizer.step()
        best, since = (accuracy, 0) if accuracy > best else (best, since + 1)
        if step % log_every == 1 or log_every == 1:
            curve.append({"step": step - 1, "accuracy": accuracy, "loss": float(loss.detach())})
        if since >= schedule.patience:
            break
    if reproduced:
        final = 1.0
    else:  # the memory after the last update, not yet measured
        with torch.no_grad():
            final, _ = accuracy_and_loss(path, ids, path.hidden())
    return Crammed(path.name, ids.numel(), tuple(path.memory.shape), final, baseline, step, curve)

"""The paper's auto-encoding check of UIO's memory (section 4.2, Table 1): a segment back from its memory alone.

Official procedure (`src/data.py` MiniPile auto-encoding, the "repeat" token): the encoder compresses a
segment `x_0 .. x_{l-1}` into memory; the decoder sees only that memory, then `[repeat] + x_1 ..
x_{l-2}` with teacher forcing, and learns to predict `x_1 .. x_{l-1}` (`autoencode_loss`, the training
objective). Evaluation decodes greedily from `[memory ; repeat]` (`reconstruct`) and compares the
result with `x_1 .. x_{l-1}` (BLEU-4 and ROUGE-L, `tasks/autoencode.py`). A memory that carries
nothing gives a reconstruction near zero at once, whatever the perplexity says.
"""

from __future__ import annotations

import torch

from methods.backbone import Backbone
from methods.base import greedy_decode
from methods.uio.adapters import UIOAdapters
from methods.uio.memory import MemoryDecoderAttention, encode, transfer
from methods.uio.trainer import MemoryPrefixAttention


def autoencode_loss(backbone: Backbone, adapters: UIOAdapters, ids: torch.Tensor, memory_tokens: int) -> torch.Tensor:
    """Mean cross-entropy of `x_1 .. x_{l-1}` decoded from the segment's memory alone (teacher forcing).

    Args:
        backbone: the frozen decoder.
        adapters: UIO's adapters (encoder, transfer head, repeat token).
        ids: `[l]` token ids of one segment.
        memory_tokens: m.

    Returns:
        scalar loss; gradients reach the encoder, the transfer head and both learned embeddings.
    """
    memory = encode(backbone, adapters, ids[None], memory_tokens)[:, 0]  # [L, m, D]
    return -backbone.token_logprobs(teacher_forced(backbone, adapters, memory, ids), ids[1:]).mean()


def teacher_forced(backbone: Backbone, adapters: UIOAdapters, memory: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Final hidden states `[l - 1, D]` of the decoder over `[memory ; repeat, text_1 .. text_{l-2}]`.

    Row i predicts `text_{i+1}`; `memory` is `[L, m, D]` (the encoder's states of one segment).
    """
    attention = MemoryPrefixAttention(backbone, adapters, [memory])
    repeat = adapters.repeat_embedding.to(memory.dtype)[None]
    inputs = torch.cat([repeat, backbone.embed(text[1:-1][None])[0]])[None]  # [1, l - 1, D]
    start = memory.shape[1]
    positions = torch.arange(start, start + inputs.shape[1], device=backbone.device)
    return backbone(inputs, positions, attention)[0]


@torch.no_grad()
def reconstruct(backbone: Backbone, adapters: UIOAdapters, ids: torch.Tensor, memory_tokens: int) -> list[int]:
    """Greedy decoding of `l - 1` tokens from `[memory of ids ; repeat]`: the segment as the memory holds it."""
    ids = ids.to(backbone.device)
    states = encode(backbone, adapters, ids[None], memory_tokens)[:, 0]
    attention = MemoryDecoderAttention(backbone, memory_tokens)
    attention.add_segment(transfer(backbone, adapters, states))
    position = memory_tokens

    def step(embedding: torch.Tensor) -> torch.Tensor:
        nonlocal position
        hidden = backbone(embedding[None, None], torch.tensor([position], device=backbone.device), attention)
        position += 1
        return backbone.logits(hidden[0, -1])

    first = step(adapters.repeat_embedding.to(states.dtype))
    feed = lambda token: step(backbone.embed(torch.tensor([token], device=backbone.device))[0])  # noqa: E731
    tokens, _ = greedy_decode(first, feed, ids.numel() - 1, stop_ids=[])
    return tokens

"""Template for methods whose whole difference is a per-layer attention over a cache (full, streaming)."""

from __future__ import annotations

from abc import abstractmethod

import torch

from methods.backbone import Attention, Backbone, join_scores
from methods.base import InputTooLong, LongContextModel, greedy_decode
from methods.parts import Parts


def spans(input_ids: torch.Tensor, start: int, stop: int, size: int):
    """`(offset, ids)` for consecutive pieces of at most `size` ids covering `input_ids[start:stop]`."""
    for begin in range(start, stop, size):
        yield begin, input_ids[begin : min(stop, begin + size)]


class DecoderMethod(LongContextModel):
    """Streams a document through the backbone in chunks of `config.chunk_size` tokens.

    Subclasses provide `new_attention()` (the per-document cache) and may set `rope_scaling` and their own
    modules for parts of the model (`parts`, `methods.parts.Parts`: LongLoRA's trained decoder).
    """

    document_state = ("attention", "position", "next_logits")

    def __init__(self, model, tokenizer, config, rope_scaling: dict | None = None, parts: Parts | None = None):
        super().__init__(model, tokenizer, config)
        self.backbone = Backbone(model, rope_scaling, parts)
        self.reset()

    @abstractmethod
    def new_attention(self) -> Attention:
        """A fresh per-layer attention state for one document."""

    @abstractmethod
    def attention_bytes(self) -> int:
        """Bytes the current attention state holds."""

    def reset(self) -> None:
        """Start a new document."""
        self.attention = self.new_attention()
        self.position = 0
        self.next_logits: torch.Tensor | None = None

    def state_bytes(self) -> int:
        """Bytes of the cache held now."""
        return self.attention_bytes()

    @torch.no_grad()
    def _step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run `[T]` new ids (T <= chunk) at the next positions; returns `[T, D]` final hidden states."""
        if self.max_context is not None and self.position + input_ids.numel() > self.max_context:
            raise InputTooLong(f"{self.position + input_ids.numel()} tokens > max_context {self.max_context}")
        device = self.backbone.device
        positions = torch.arange(self.position, self.position + input_ids.numel(), device=device)
        hidden = self.backbone(self.backbone.embed(input_ids.to(device)[None]), positions, self.attention)
        self.position += input_ids.numel()
        return hidden[0]

    def fit(self, length: int) -> None:
        """Adapt to a document (or prompt) of `length` tokens as it starts (methods that size something to it)."""

    def _chunks(self, input_ids: torch.Tensor):
        """`(offset, ids)` pieces the document is fed in; methods with their own schedule override this."""
        yield from spans(input_ids, 0, input_ids.numel(), self.config.chunk_size)

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, greedy: bool = False):
        """Log-probs of tokens 1..T-1; the last hidden state of a chunk predicts the next chunk's first token."""
        if not self.position:
            self.fit(input_ids.numel())
        targets = input_ids.to(self.backbone.device)
        out = []
        for start, chunk in self._chunks(input_ids):
            hidden = self._step(chunk)
            wanted = targets[start + 1 : start + 1 + chunk.numel()]
            out.append(self.backbone.token_logprobs(hidden[: wanted.numel()], wanted, greedy))
        self.next_logits = self.backbone.logits(hidden[-1])
        return join_scores(out, greedy)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> None:
        """Consume the prompt chunk by chunk; keep only the last position's logits."""
        if not self.position:
            self.fit(input_ids.numel())
        for _, chunk in self._chunks(input_ids):
            hidden = self._step(chunk)
        self.next_logits = self.backbone.logits(hidden[-1])

    @torch.no_grad()
    def decode(self, max_new_tokens: int, stop_ids: list[int]) -> list[int]:
        """Greedy decoding, one token per step over the cache."""

        def feed(token: int) -> torch.Tensor:
            return self.backbone.logits(self._step(torch.tensor([token]))[-1])

        tokens, self.next_logits = greedy_decode(self.next_logits, feed, max_new_tokens, stop_ids)
        return tokens

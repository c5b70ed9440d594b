"""UIO-LLMs: segment compression into memory tokens read by the frozen decoder.

An encoder compresses each segment into memory tokens; a transfer head turns them into K/V that the
frozen decoder reads as a prefix (paper Fig. 2 and section 3, arXiv 2406.18173). The memory path is
`methods.uio.memory`; `UIO` streams documents through it, and trains with `methods.uio.trainer`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.core.checkpoint_files import trained_extent
from harness.core.errors import UserError
from methods.backbone import Backbone, join_scores
from methods.base import InputTooLong, LongContextModel, greedy_decode, register_method
from methods.token_loss import TokenLoss
from methods.uio import autoencode, trainer
from methods.uio.adapters import UIOAdapters
from methods.uio.config import UIOConfig, UIOTrainConfig
from methods.uio.memory import MemoryDecoderAttention, encode, transfer


@register_method("uio")
class UIO(LongContextModel):
    """UIO-LLMs: segments compressed into memory tokens (32x by default) read by the frozen decoder."""

    description = "UIO-LLMs: LoRA encoder compresses each segment into memory tokens read by the frozen decoder"
    sources = "UIO-LLMs, Li et al. 2024, https://arxiv.org/abs/2406.18173; https://github.com/wenhaoli-xmu/UIO-LLMs."
    Config = UIOConfig
    TrainConfig = UIOTrainConfig
    REFERENCE_STRATEGY = "bptt"  # exact gradient the others are measured against (`lch gradients`)
    STOCHASTIC_STRATEGIES = ("unbiased", "unbiased-official")  # their gradient depends on a seed
    # `lch gradients` names for train options beyond the strategy: the official train.py's gradient
    STRATEGY_VARIANTS = {"unbiased-official": {"strategy": "unbiased", "compensation": False}}
    TRAINING_DEFAULTS: ClassVar[dict] = {}  # the training loop's defaults are UIO's official ones
    document_state = ("attention", "open", "compressed", "next_logits")

    def __init__(self, model, tokenizer, config: UIOConfig):
        super().__init__(model, tokenizer, config)
        self.backbone = Backbone(model)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.adapters = UIOAdapters(model, config.lora_rank, config.lora_alpha, eos).to(self.backbone.device)
        self.trained_memories: int | None = None  # most memories one segment read in training, when known
        if config.checkpoint:
            self.adapters.load(config.checkpoint)
            self.trained_memories = trained_extent(config.checkpoint).get("most_memories")
        self.window = config.window or model.config.max_position_embeddings
        self.max_context = config.max_context(self.window)
        self.train_config = UIOTrainConfig()
        self.reset()

    def reset(self) -> None:
        """Forget memories, the open segment and positions."""
        evicts = self.config.over_context == "keep_recent"
        self.attention = MemoryDecoderAttention(self.backbone, self.config.memory_tokens, evicts)
        self.open: list[int] = []  # ids of the open (not yet compressed) segment
        self.compressed = 0  # tokens compressed so far
        self.next_logits: torch.Tensor | None = None

    def state_bytes(self) -> int:
        """Bytes of memory K/V plus the raw K/V of the open segment."""
        return self.attention.nbytes()

    @property
    def untrained(self) -> bool:
        """Its memory runs on adapters at zero initialisation (no checkpoint); without memory nothing is trained."""
        return self.config.memory and self.config.checkpoint is None

    def beyond_trained_memory(self, length: int) -> bool:
        """The last token's segment reads one memory per segment before it (fewer when `keep_recent` evicts)."""
        if self.trained_memories is None or not self.config.memory:
            return False
        read = (length - 1) // self.config.segment
        if self.config.over_context == "keep_recent":
            read = min(read, (self.window - self.config.segment) // self.config.memory_tokens)
        return read > self.trained_memories

    def beyond_trained_window(self, length: int) -> bool:
        """Decoder positions (memory + open segment) never pass `window`, nor `segment` without memory."""
        return min(length, self.window if self.config.memory else self.config.segment) > (
            self.model.config.max_position_embeddings
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """LoRA weights of the encoder and transfer head, and the `<mem>` embedding."""
        return self.adapters.trainable_parameters()

    def parameter_groups(self) -> list[tuple[list[torch.nn.Parameter], float]]:
        """(parameters, learning-rate multiple) for the optimizer: the transfer head apart when it has its own rate.

        One group at the default, so optimizer states saved before `transfer_lr_scale` existed still load.
        """
        parameters, scale = self.trainable_parameters(), self.train_config.transfer_lr_scale
        if scale == 1:
            return [(parameters, 1.0)]
        transfer = {id(p) for p in self.adapters.transfer.parameters()}
        return [
            ([p for p in parameters if id(p) not in transfer], 1.0),
            ([p for p in parameters if id(p) in transfer], scale),
        ]

    @classmethod
    def check_document_length(cls, config: UIOConfig, seq_len: int, trained_window: int | None = None) -> None:
        """A stage's documents are >= 2 whole segments whose memories and last segment fit the decoder window.

        `seq_len` is the stage's (longest) document length; shorter documents of a stage (a text or record
        used whole) may end in a partial segment. `trained_window` (the base model's, known once it is
        loaded) stands in for an unset `config.window`.
        """
        if not config.memory:
            raise UserError("uio with memory=false has nothing to train (the decoder is frozen)")
        if seq_len % config.segment or seq_len < 2 * config.segment:
            raise UserError(f"documents of {seq_len} tokens must be a multiple of segment {config.segment}, at least 2")
        window = config.window or trained_window
        if window is None:
            return
        positions = (seq_len // config.segment - 1) * config.memory_tokens + config.segment
        if positions > window:
            raise UserError(f"documents of {seq_len} tokens put decoder positions at {positions} > window {window}")

    def document_gradients(
        self, input_ids: torch.Tensor, strategy: str, window: int, seed: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Gradient of every trainable parameter for one document (`methods.uio.trainer.document_gradients`).

        `strategy` is a strategy or one of `STRATEGY_VARIANTS` (`unbiased-official`).
        """
        options = self.STRATEGY_VARIANTS.get(strategy, {"strategy": strategy})
        return trainer.document_gradients(self, input_ids, window=window, seed=seed, **options)

    def backward_document(self, input_ids: torch.Tensor, token_loss: TokenLoss | None = None) -> float:
        """Accumulate one document's gradient under `train_config`; returns its loss.

        Reservoir draws come from torch's global generator, whose state training checkpoints save.

        Args:
            input_ids: `[T]` token ids.
            token_loss: which predictions count and against what (`methods.token_loss`): the weighted mean
                over every prediction. None: the official loss (`methods.uio.trainer.Document` says which
                documents it needs and what the others get).
        """
        if self.train_config.objective == "autoencode":
            if token_loss is not None:
                raise UserError("uio's objective=autoencode is its own loss: train it with --loss all --objective lm")
            return self._backward_autoencode(input_ids)
        document = trainer.run_document(
            self.backbone, self.adapters, input_ids, self.config.segment, self.config.memory_tokens,
            self.train_config, trainer.reservoir_draws(), token_loss,
        )  # fmt: skip
        return document.value()

    def _backward_autoencode(self, input_ids: torch.Tensor) -> float:
        """The auto-encoding objective: every segment of the document decoded back from its own memory."""
        segments = input_ids.to(self.backbone.device).view(-1, self.config.segment)
        losses = []
        for ids in segments:
            loss = autoencode.autoencode_loss(self.backbone, self.adapters, ids, self.config.memory_tokens)
            (loss / len(segments)).backward()
            losses.append(float(loss.detach()))
        return sum(losses) / len(losses)

    def reconstruct(self, input_ids: torch.Tensor) -> list[int]:
        """A `segment`-token text compressed into memory and decoded back from it alone (the auto-encoding check)."""
        if input_ids.numel() != self.config.segment:
            raise UserError(f"uio reconstructs one segment: give {self.config.segment} tokens, got {input_ids.numel()}")
        return autoencode.reconstruct(self.backbone, self.adapters, input_ids, self.config.memory_tokens)

    def trained_extent(self, seq_len: int) -> dict[str, int]:
        """What training on `seq_len`-token documents showed the weights: the last segment read the rest's memories."""
        return {"longest_document": seq_len, "most_memories": seq_len // self.config.segment - 1}

    def save(self, directory) -> None:
        """Write adapters and `<mem>` embedding (safetensors, peft state dicts)."""
        self.adapters.save(directory)

    def load(self, directory) -> None:
        """Load what `save` wrote."""
        self.adapters.load(directory)

    def _memory_kv(self, segments: list[list[int]]) -> list[list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Encode full segments in batches of `encode_batch` (they are independent) and transfer each.

        Without memory (`memory=False`) nothing is encoded: each segment's memory is None.
        """
        if not self.config.memory:
            return [None] * len(segments)
        out = []
        for start in range(0, len(segments), self.config.encode_batch):
            ids = torch.tensor(segments[start : start + self.config.encode_batch], device=self.backbone.device)
            states = encode(self.backbone, self.adapters, ids, self.config.memory_tokens)
            out.extend(transfer(self.backbone, self.adapters, states[:, b]) for b in range(ids.shape[0]))
        return out

    def _make_room(self, tokens: int) -> None:
        """Apply the context policy before `tokens` more tokens enter the decoder."""
        if self.config.over_context == "error":
            total = self.compressed + len(self.open) + tokens
            if self.max_context is not None and total > self.max_context:
                raise InputTooLong(f"{total} tokens > max_context {self.max_context} of uio (window {self.window})")
            return
        attention, dropped = self.attention, False
        while attention.kept and attention.memory_length + len(self.open) + tokens > self.window:
            attention.drop_oldest()
            dropped = True
        if dropped and self.open:
            # Rebuild the open segment's raw K/V over the kept memory, as if the document began there.
            # Re-rotating the cached keys by -m would fix only their positions (off by 3e-3 in
            # test_keep_recent_*); this costs one pass over at most a segment per drop.
            start = attention.memory_length
            positions = torch.arange(start, start + len(self.open), device=self.backbone.device)
            block = torch.tensor(self.open, device=self.backbone.device)[None]
            self.backbone(self.backbone.embed(block), positions, attention)

    def _decode(self, ids: list[int]) -> torch.Tensor:
        """Run the frozen decoder on a block inside the open segment; returns `[T, D]` final hidden states."""
        self._make_room(len(ids))
        start = self.attention.memory_length + self.attention.raw_length
        positions = torch.arange(start, start + len(ids), device=self.backbone.device)
        block = torch.tensor(ids, device=self.backbone.device)[None]
        hidden = self.backbone(self.backbone.embed(block), positions, self.attention)[0]
        self.open.extend(ids)
        return hidden

    def _close_segment(self, kv) -> None:
        """The open segment is full: replace its raw K/V by its memory (None: by nothing)."""
        if kv is None:
            self.attention.drop_raw()
        else:
            self.attention.add_segment(kv)
        self.compressed += len(self.open)
        self.open = []

    def _segments_closed_by(self, ids: list[int]) -> list[list[int]]:
        """The full segments that feeding `ids` will close, in order."""
        text = self.open + ids
        return [
            text[i : i + self.config.segment]
            for i in range(0, len(text) - self.config.segment + 1, self.config.segment)
        ]

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, greedy: bool = False):
        """Log-probs of tokens 1..T-1; each segment is decoded with the memory of the ones before it."""
        ids = input_ids.tolist()
        memories = iter(self._memory_kv(self._segments_closed_by(ids)))
        targets = input_ids.to(self.backbone.device)
        out, done = [], 0
        for block, closes in self._split(ids):
            hidden = self._decode(block)
            wanted = targets[done + 1 : done + 1 + len(block)]
            out.append(self.backbone.token_logprobs(hidden[: wanted.numel()], wanted, greedy))
            self.next_logits = self.backbone.logits(hidden[-1])
            done += len(block)
            if closes:
                self._close_segment(next(memories))
        return join_scores(out, greedy)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> None:
        """Consume a prompt.

        Segments closed before the last block skip the decoder: their raw K/V would be dropped at
        once, and their memory comes from the encoder alone (same state, less compute).
        """
        ids = input_ids.tolist()
        memories = iter(self._memory_kv(self._segments_closed_by(ids)))
        blocks = list(self._split(ids))
        for index, (block, closes) in enumerate(blocks):
            if index == len(blocks) - 1:
                self.next_logits = self.backbone.logits(self._decode(block)[-1])
            else:
                self._make_room(len(block))
                self.open.extend(block)
            if closes:
                self._close_segment(next(memories))

    @torch.no_grad()
    def decode(self, max_new_tokens: int, stop_ids: list[int]) -> list[int]:
        """Greedy decoding; generated text is compressed like the prompt once a segment fills up."""

        def feed(token: int) -> torch.Tensor:
            logits = self.backbone.logits(self._decode([token])[-1])
            if len(self.open) == self.config.segment:
                self._close_segment(self._memory_kv([self.open])[0])
            return logits

        tokens, self.next_logits = greedy_decode(self.next_logits, feed, max_new_tokens, stop_ids)
        return tokens

    def _split(self, ids: list[int]):
        """Blocks of `ids` that end at segment boundaries: yields (block, whether it closes the open segment)."""
        position, open_length = 0, len(self.open)
        while position < len(ids):
            block = ids[position : position + self.config.segment - open_length]
            position += len(block)
            open_length += len(block)
            closes = open_length == self.config.segment
            yield block, closes
            if closes:
                open_length = 0

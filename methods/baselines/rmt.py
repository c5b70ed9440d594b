"""RMT: the Recurrent Memory Transformer as the official Hugging Face decoder wrapper.

Bulatov et al. 2022 (https://arxiv.org/abs/2207.06881) and 2023 (https://arxiv.org/abs/2304.11062); code
booydar/recurrent-memory-transformer, `modeling_rmt/language_modeling.py` (`MemoryCell`, `RecurrentWrapper`).
A document is cut into segments of S = `segment` tokens, left-aligned (the last may be short). Segment t
runs through the backbone alone as `[read memory ; tokens ; write memory]` (m + S + m inputs, the same m
vectors at both ends), under a plain causal mask, at positions 0..m+S+m-1 in every segment. The backbone's
final hidden states (after the final norm, HF's `hidden_states[-1]`) at the write slots are the next
segment's memory; the first segment reads m learned vectors. The tokens' logits are those of positions
m..m+S-1, so the write slots never change them (the causal mask hides them from the tokens): the last
segment's write slots, whose memory nobody reads, are not computed.

Training loss: next-token cross-entropy over the whole document, averaged over its T - 1 predictions; the
last token of a segment predicts the first of the next (the official concatenated logits, shifted once).
Other objectives (answer tokens only, as BABILong's RMT masks its labels to the answer; distillation)
weight these predictions through `methods.token_loss.TokenLoss`.

Truncated BPTT (`RMTTrainConfig`, the official `manage_gradients` as the `aaai24` and `babilong-release`
branches fixed it; on the default branch the detached memory is computed and dropped, so `k2` does nothing
there). With N segments in the document, the memory written by segment t goes on to segment t + 1 with its
graph when `strategy` is `bptt`, or t == 0, or t + k2 > N; otherwise detached. So, for `truncated` with
k2 < N, the loss of segment u reaches (its gradient flows into the inputs and weights of):

* u = 0: segment 0 and the memory parameter;
* u = 1: segments 0 and 1 and the memory parameter (the t == 0 link is never cut);
* 2 <= u <= N - k2 + 1: segment u alone;
* u >= N - k2 + 2: segments N - k2 + 1 .. u (the last segment's loss reaches k2 - 2 earlier segments).

With k2 >= N, or `bptt`, every loss reaches every earlier segment and the memory parameter. k2 = 1 and 2
cut the same links. N is the document's own segment count (the official scripts set `max_n_segments` to
the stage's count, which every document of a fixed-length stage has; with varying lengths, as BABILong's
`--vary_n_segments`, it runs `k2 = -1`, full BPTT, where N does not matter). Where a link is cut, the
losses before it are backpropagated at once, which frees their graph: training memory is that of the
segments between cuts.

Inference: `score()` carries memory across segments and scores every token once; `prefill()` runs every
segment but the last through the memory cell and keeps the last one, after the read memory and with no
write slots, as the decoding context, as the official `RecurrentWrapper.generate` (a prompt of a whole
number of segments keeps its last full segment as that context, as there); `decode()` continues over a KV
cache of `[memory ; last segment ; generated]`, whose positions grow past m + S as the official
`generate` lets them. Each `score()` or `prefill()` call is one document, starting from the learned memory.

`read_memory: false` is the trained memory's own control: every segment reads the initial memory instead of
the one written before it, so a checkpoint scores with the same weights and the same local context and no
information carried across segments (each segment as a new document).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import save_file
from torch import nn

from harness.core.checkpoint_files import checked_directory, trained_extent
from harness.core.errors import UserError
from methods.attention import causal_attention, rotate
from methods.backbone import Backbone, join_scores
from methods.base import LongContextModel, MethodConfig, greedy_decode, register_method
from methods.baselines.full import FullAttention
from methods.parts import Parts, read_tensors
from methods.token_loss import TokenLoss

PARTS_FILE = "rmt_parts.safetensors"
MEMORY_FILE = "rmt_memory.safetensors"
WHAT = "RMT checkpoint"
# peft's default LoRA targets for Llama, Mistral and Qwen2: the official script names none (on GPT-2 peft picks c_attn)
LORA_TARGETS = ("q_proj", "v_proj")
MEMORY_SEED = 0  # the memory's initial draw, the same in every run


class RMTConfig(MethodConfig):
    """RMT over the frozen base model: m memory vectors, with LoRA (default) or own copies of the whole decoder.

    Defaults and their official sources:

    * `segment` 512 and `memory_tokens` 16: the BABILong scripts (`babilong-release`,
      `scripts_exp/babilong/*.sh`: SEGMENT_SIZE 512, MEMORY_SIZE 16, on GPT-2 137M, the size of SmolLM2-135M);
      the default branch's language-modelling scripts use input 128 on GPT-2, i.e. `segment` 124 with 2 memory
      tokens. `memory_tokens: 0` runs the segments without memory (the official cell passes them through as
      they are): full attention over disjoint windows, the no-memory control.
    * `trainable: lora`, `lora_rank` 8, `lora_alpha` 32: the LoRA scripts (`scripts/wikitext/*lora*rmt*.sh`,
      `run_finetuning_lm_rmt.py --use_lora --freeze_model_weights`: the backbone frozen, LoRA and the memory
      train). They give peft no target modules, so peft takes its default for the architecture: q_proj and
      v_proj on Llama, Mistral and Qwen2 (c_attn, the fused q, k, v, on their GPT-2). `trainable: full`: the
      whole decoder trains (BABILong fine-tunes all of GPT-2), as own copies of every layer's projections,
      MLP and norms, the final norm and the input embedding (`methods.parts.Parts(own_layers=True)`); the
      output layer stays the base model's, frozen (with tied embeddings, as SmolLM2's, the official GPT-2
      run trains the tied matrix on both sides; here only the input side trains).
    * `checkpoint`: a directory written by `RMT.save`; without it the memory is its seeded initial draw
      (randn x the std of the input embedding) and LoRA is at zero: an untrained RMT.
    * `read_memory` (lch's, default true): false cuts the memory between segments, each reading the initial
      memory (the memory-cut control of a checkpoint; no official counterpart).

    Deviations: LoRA dropout 0 (official 0.1) and no dropout in the backbone (GPT-2's 0.1 in the official
    training), so training is deterministic and its loss is the scored negative log-likelihood, as for UIO
    and LongLoRA here; segments are left-aligned only (official also `right` and `center`); the memory's
    initial draw comes from a fixed-seed generator (official: the global RNG).
    """

    segment: int = Field(512, ge=1)
    memory_tokens: int = Field(16, ge=0)
    trainable: Literal["lora", "full"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int = Field(32, ge=1)
    checkpoint: str | None = None
    read_memory: bool = True
    later_options: ClassVar[tuple[str, ...]] = ("read_memory",)  # stores written before it resume
    checkpoint_fields: ClassVar[tuple[str, ...]] = ("checkpoint",)
    checkpoint_options: ClassVar[tuple[str, ...]] = ("segment", "memory_tokens", "trainable", "lora_rank", "lora_alpha")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, checkpoint: str | None) -> str | None:
        return checked_directory(checkpoint, "RMT")


class RMTTrainConfig(BaseModel):
    """How far back a segment's loss reaches through memory (the module docstring lists the exact pairs).

    `bptt` (default): through every memory (BABILong's `--k2 -1`; also what the default branch's LoRA scripts
    ran, whose `--k2 4` had no effect there). `truncated`: the official `manage_gradients` with `k2` (default
    4, the default branch's LoRA scripts); `lch gradients --method rmt` passes its `--window` values as `k2`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["bptt", "truncated"] = "bptt"
    k2: int = Field(4, ge=1)


def keeps_graph(t: int, n_segments: int, config: RMTTrainConfig) -> bool:
    """Whether the memory written by segment `t` reaches segment t + 1 with its graph (official `manage_gradients`)."""
    return config.strategy == "bptt" or t == 0 or t + config.k2 > n_segments


class SegmentAttention:
    """Plain causal attention within one segment, no cache: the memory cell's."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def attend(self, layer, q, k, v, positions):
        """Rotate at the segment's positions (from 0) and attend causally."""
        cos, sin = self.backbone.rope(positions)
        return causal_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, self.backbone.scale)


def memory_cell(backbone: Backbone, memory: torch.Tensor, embeds: torch.Tensor, write: bool = True):
    """One segment through the backbone as `[memory ; embeds ; memory]`, causal, at positions 0..m+S+m-1.

    Args:
        backbone: the decoder (with the method's own modules).
        memory: `[m, D]` (or `[B, m, D]`) the memory read (and, at the end, copied into the write slots).
        embeds: `[S, D]` the segment's token embeddings, or `[B, S, D]` for B documents' segments at once
            (a `[m, D]` memory is then read by all of them).
        write: add the write slots (False: `[memory ; embeds]`, for a segment whose memory nobody reads).

    Returns:
        `[S, D]` (`[B, S, D]`) final hidden states of the tokens and `[m, D]` (`[B, m, D]`) the memory written
        (post final norm), or None.
    """
    batched = embeds.dim() == 3
    if batched and memory.dim() == 2:
        memory = memory.expand(embeds.shape[0], -1, -1)
    m, length = memory.shape[-2], embeds.shape[-2]
    x = torch.cat([memory, embeds, memory] if write else [memory, embeds], dim=-2)
    positions = torch.arange(x.shape[-2], device=x.device)
    hidden = backbone(x if batched else x[None], positions, SegmentAttention(backbone))
    hidden = hidden if batched else hidden[0]
    return hidden[..., m : m + length, :], hidden[..., m + length :, :] if write else None


@register_method("rmt")
class RMT(LongContextModel):
    """Recurrent Memory Transformer: segments with read/write memory tokens, memory carried from one to the next."""

    description = "RMT: segments read and write memory tokens carried to the next segment (LoRA or full fine-tune)"
    sources = (
        "Recurrent Memory Transformer, Bulatov et al. 2022, https://arxiv.org/abs/2207.06881; Scaling Transformer to "
        "1M tokens and beyond with RMT, Bulatov et al. 2023, https://arxiv.org/abs/2304.11062; "
        "https://github.com/booydar/recurrent-memory-transformer."
    )
    Config = RMTConfig
    TrainConfig = RMTTrainConfig
    REFERENCE_STRATEGY = "bptt"  # exact gradient `truncated` is measured against (`lch gradients`)
    STOCHASTIC_STRATEGIES: ClassVar[tuple[str, ...]] = ()
    # The default branch's LoRA curriculum script (finetune_wikitext_short_lora_curriculum_rmt.sh): torch AdamW
    # (betas 0.9, 0.999), lr 1e-4, weight decay 1e-3, linear schedule with 10% warm-up. Its clip_grad_value 5
    # has no counterpart here: lch clips the norm to 1.0, as BABILong's scripts do. Full fine-tuning: BABILong
    # uses lr 1e-5 and weight decay 0.01 (pass --lr, --weight-decay).
    TRAINING_DEFAULTS: ClassVar[dict] = {
        "lr": 1e-4, "weight_decay": 1e-3, "warmup": 0.1, "schedule": "linear", "betas": (0.9, 0.999),
    }  # fmt: skip
    document_state = ("memory_state", "attention", "position", "next_logits", "open")

    def __init__(self, model, tokenizer, config: RMTConfig):
        super().__init__(model, tokenizer, config)
        device = model.lm_head.weight.device
        if config.trainable == "lora":
            parts = Parts(model, LORA_TARGETS, config.lora_rank, config.lora_alpha, adapter="rmt")
        else:
            parts = Parts(model, adapter="rmt", norms=True, embedding=True, own_layers=True)
        self.parts = parts.to(device)
        self.backbone = Backbone(model, parts=self.parts)
        embedding = model.model.embed_tokens.weight
        generator = torch.Generator().manual_seed(MEMORY_SEED)
        draw = torch.randn(config.memory_tokens, embedding.shape[1], generator=generator)
        std = embedding.detach().float().std()  # kept on the model's device: on `meta` (FLOP counts) it has no value
        self.memory = nn.Parameter((draw.to(device) * std).to(dtype=embedding.dtype))
        self.trained_segments: int | None = None  # most segments of a training document, when known
        if config.checkpoint:
            self.load(config.checkpoint)
            self.trained_segments = trained_extent(config.checkpoint).get("most_segments")
        self.train_config = RMTTrainConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the document: its memory and the decoding cache."""
        self.memory_state: torch.Tensor | None = None
        self.attention: FullAttention | None = None
        self.position = 0
        self.next_logits: torch.Tensor | None = None
        self.open: list[int] = []  # ids of the last segment and the tokens decoded after it: not yet in memory

    def state_bytes(self) -> int:
        """Bytes of the memory carried and of the decoding KV cache over `[memory ; last segment ; generated]`."""
        memory = 0 if self.memory_state is None else self.memory_state.numel() * self.memory_state.element_size()
        return memory + (self.attention.nbytes() if self.attention is not None else 0)

    @property
    def untrained(self) -> bool:
        """Without a checkpoint the memory is its initial draw and LoRA is at zero (the copies are the base's).

        Without memory and checkpoint it is the base model over disjoint segments: the no-memory control,
        as intended, not an untrained method.
        """
        return self.config.checkpoint is None and self.config.memory_tokens > 0

    @property
    def variant(self) -> str | None:
        """The memory cut is lch's control, not RMT: results carry it in the label."""
        return None if self.config.read_memory else "memory cut"

    def beyond_trained_memory(self, length: int) -> bool:
        """A `length`-token input has more segments (memory passes) than the checkpoint's training documents."""
        if self.trained_segments is None or not self.config.memory_tokens or not self.config.read_memory:
            return False
        return math.ceil(length / self.config.segment) > self.trained_segments

    def beyond_trained_window(self, length: int) -> bool:
        """Positions restart every segment: they reach `min(length, segment) + 2 * memory_tokens`."""
        positions = min(length, self.config.segment) + 2 * self.config.memory_tokens
        return positions > self.model.config.max_position_embeddings

    # ---- inference -------------------------------------------------------------------------------------

    @torch.no_grad()
    def _run(self, input_ids: torch.Tensor, greedy: bool, scored: bool, memory: torch.Tensor | None = None):
        """Every segment but the last through the memory cell, then the last as the decoding context.

        `memory`: what the first segment reads (default: the initial memory of a new document). Without
        `read_memory`, every segment reads the initial memory and an unscored segment before the last is skipped.
        """
        initial = self.memory.detach()
        memory = initial if memory is None else memory
        self.reset()
        backbone, segment, read = self.backbone, self.config.segment, self.config.read_memory
        ids = input_ids.to(backbone.device)
        starts = list(range(0, ids.numel(), segment))
        out = []
        for start in starts[:-1] if read or scored else ():
            hidden, written = memory_cell(backbone, memory, backbone.embed(ids[start : start + segment]), write=read)
            memory = written if read else initial
            if scored:
                out.append(backbone.token_logprobs(hidden, ids[start + 1 : start + segment + 1], greedy))
        last = ids[starts[-1] :]
        self.memory_state, self.attention, self.open = memory, FullAttention(backbone), last.tolist()
        x = torch.cat([memory, backbone.embed(last)])
        self.position = x.shape[0]
        positions = torch.arange(self.position, device=x.device)
        hidden = backbone(x[None], positions, self.attention)[0, memory.shape[0] :]
        self.next_logits = backbone.logits(hidden[-1])
        if scored:
            wanted = ids[starts[-1] + 1 :]
            out.append(backbone.token_logprobs(hidden[: wanted.numel()], wanted, greedy))
        return join_scores(out, greedy) if scored else None

    def score(self, input_ids: torch.Tensor, greedy: bool = False):
        """Log-probs of tokens 1..T-1, segment by segment with the memory carried (a new document per call)."""
        return self._run(input_ids, greedy, scored=True)

    def prefill(self, input_ids: torch.Tensor) -> None:
        """Consume a prompt: memory over all segments but the last, which is decoded after it.

        A second call continues the document (a question after a shared context): its ids follow the open
        segment's, which runs again from the memory before it, as one call with all the ids would have run it.
        """
        if self.position:
            input_ids = torch.cat([torch.tensor(self.open, dtype=input_ids.dtype), input_ids.cpu()])
            self._run(input_ids, greedy=False, scored=False, memory=self.memory_state)
        else:
            self._run(input_ids, greedy=False, scored=False)

    @torch.no_grad()
    def decode(self, max_new_tokens: int, stop_ids: list[int]) -> list[int]:
        """Greedy decoding over the KV cache of `[memory ; last segment ; generated]` (no new memory is written)."""

        def feed(token: int) -> torch.Tensor:
            device = self.backbone.device
            x = self.backbone.embed(torch.tensor([[token]], device=device))
            positions = torch.arange(self.position, self.position + 1, device=device)
            self.position += 1
            self.open.append(token)
            return self.backbone.logits(self.backbone(x, positions, self.attention)[0, -1])

        tokens, self.next_logits = greedy_decode(self.next_logits, feed, max_new_tokens, stop_ids)
        return tokens

    # ---- training --------------------------------------------------------------------------------------

    def segment_losses(
        self, input_ids: torch.Tensor, embeds: torch.Tensor | None = None, token_loss: TokenLoss | None = None
    ):
        """Yield, segment by segment, the weighted sum of its predictions' losses and whether its memory is cut.

        Args:
            input_ids: `[T]` token ids of the document.
            embeds: `[T, D]` input embeddings to use instead of embedding `input_ids` (tests measure which
                segments a loss reaches by the gradient on them).
            token_loss: which predictions count and against what; None: every token's NLL (summed).
        """
        backbone, segment = self.backbone, self.config.segment
        ids = input_ids.to(backbone.device)
        token_loss = token_loss or TokenLoss.every_token(ids)
        starts = range(0, ids.numel(), segment)
        memory, read = self.memory, self.config.read_memory
        for t, start in enumerate(starts):
            write = read and t < len(starts) - 1
            # embedded per segment: with an own embedding (`trainable: full`) one lookup for the document would be
            # a graph node every segment shares, freed by the first backward at a cut
            piece = backbone.embed(ids[start : start + segment]) if embeds is None else embeds[start : start + segment]
            hidden, written = memory_cell(backbone, memory, piece, write)
            memory = written if write else self.memory
            predicted = min(segment, ids.numel() - start - 1)  # the last token predicts nothing
            # without read_memory no later segment's graph joins this one's: free it at once, as at a cut
            cut = t < len(starts) - 1 and not (read and keeps_graph(t, len(starts), self.train_config))
            if cut and read:
                memory = memory.detach()
            yield token_loss.stretch(backbone, hidden[:predicted], start + 1), cut

    def backward_document(self, input_ids: torch.Tensor, token_loss: TokenLoss | None = None) -> float:
        """One document's loss, backpropagated at every cut and at the end; returns it.

        Args:
            input_ids: `[T]` token ids.
            token_loss: which predictions count and against what (`methods.token_loss`); None: every token's
                NLL, the official loss (the mean over the document's T - 1 predictions).
        """
        token_loss = token_loss or TokenLoss.every_token(input_ids.to(self.backbone.device))
        total, pending = 0.0, None
        for loss, cut in self.segment_losses(input_ids, token_loss=token_loss):
            total += float(loss.detach())
            pending = loss if pending is None else pending + loss
            if cut and pending.requires_grad:  # no later loss reaches these segments: free their graph now
                (pending / token_loss.total).backward()
                pending = None
        if pending is not None and pending.requires_grad:  # no weighted prediction after the last cut
            (pending / token_loss.total).backward()
        return total / token_loss.total

    def named_trainable(self) -> dict[str, nn.Parameter]:
        """The memory (when there is one) and the trainable tensors of the own modules, by name."""
        named = {"memory": self.memory} if self.config.memory_tokens else {}
        return named | {f"parts.{k}": p for k, p in self.parts.named_parameters() if p.requires_grad}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The memory and LoRA on q, v (`lora`), or every own copy of the decoder (`full`)."""
        return list(self.named_trainable().values())

    def document_gradients(
        self, input_ids: torch.Tensor, strategy: str, window: int, seed: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Gradient of every trainable parameter for one document under `strategy`, k2 = `window` (`lch gradients`)."""
        saved, self.train_config = self.train_config, RMTTrainConfig(strategy=strategy, k2=window)
        named = self.named_trainable()
        for parameter in named.values():
            parameter.grad = None
        try:
            self.backward_document(input_ids)
        finally:
            self.train_config = saved
        return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in named.items()}

    @classmethod
    def check_document_length(cls, config: RMTConfig, seq_len: int, trained_window: int | None = None) -> None:
        """A training document is at least 2 tokens; a segment with its read and write memory fits the window."""
        if seq_len < 2:
            raise UserError(f"documents of {seq_len} tokens: a training document needs at least 2")
        positions = config.segment + 2 * config.memory_tokens
        if trained_window is not None and positions > trained_window:
            raise UserError(
                f"segment {config.segment} + 2 x memory_tokens {config.memory_tokens} = {positions} positions "
                f"> the model's window {trained_window}"
            )

    def trained_extent(self, seq_len: int) -> dict[str, int]:
        """Training on `seq_len`-token documents: their length and their number of segments."""
        return {"longest_document": seq_len, "most_segments": math.ceil(seq_len / self.config.segment)}

    def save(self, directory) -> None:
        """Write the own modules' trainable tensors and the memory (two safetensors files)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.parts.save(Path(directory) / PARTS_FILE)
        save_file({"memory": self.memory.detach().contiguous().cpu()}, str(Path(directory) / MEMORY_FILE))

    def load(self, directory) -> None:
        """Load what `save` wrote; a missing or mismatched file is a one-line error."""
        self.parts.load(Path(directory) / PARTS_FILE, WHAT)
        stored = read_tensors(Path(directory) / MEMORY_FILE, WHAT).get("memory")
        if stored is None or stored.shape != self.memory.shape:
            shape = None if stored is None else tuple(stored.shape)
            raise UserError(
                f"{WHAT} '{directory}' does not match this model: {MEMORY_FILE} memory is {shape}, "
                f"expected {tuple(self.memory.shape)} (memory_tokens x hidden size)"
            )
        with torch.no_grad():
            self.memory.copy_(stored)

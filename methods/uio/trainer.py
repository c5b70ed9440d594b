"""UIO-LLMs training: the gradient of one document under four strategies (paper section 3.3).

A document of T segments is a recurrent net over memories: segment t is decoded over the transfer
of the memories of segments < t, and the encoder compresses segment t into memory m_t without
seeing earlier memories (so dm_i/dm_j = 0, paper section 3.3.1). The strategies
differ in which (loss t, memory s) pairs reach the encoder:

* `bptt`: every pair, by backpropagating the sum of all losses through every encoder graph (the
  reference; memory grows with T).
* `tbptt`: pairs with t - s <= S, backpropagating each loss through the S most recent encoder
  graphs (O(T*S) encoder backward passes).
* `incremental`: the same pairs as `tbptt`, in O(T): memories enter the decoder as detached leaves
  that accumulate gradient from every later loss; an encoder graph is backpropagated once, with its
  leaf's gradient, when it leaves the window (paper Eqs. 7-9).
* `unbiased`: incremental with a reservoir of S graphs (Algorithm R) and each loss's new leaf
  gradient scaled by max(1, k/S) (0-based k), so that the expected gradient equals `bptt`'s (paper
  Eqs. 11-12). The official `train.py` has the reservoir but never applies the factor:
  `compensation=False` (a train option) runs that, whose expected gradient is not `bptt`'s.

Every strategy gets the transfer head's direct gradient exactly. The loss of segment 0 has no
trainable path (no memory yet; text uses frozen weights) and is skipped, as in the official code.
Each segment's loss is its mean next-token cross-entropy within the segment; losses are summed over
segments, as in the official long-book data (`src/data.py`); gradient clipping normalises the scale.

With a `TokenLoss` (answer tokens only, distillation: `methods.token_loss`) the document's loss is instead
the weighted mean over all its predictions, the one `score()` makes: segment t's decoding also predicts the
first token of segment t + 1, segment 0's predictions count in the value (without a gradient), and a segment
with no weighted prediction is not decoded at all. The last segment may then be shorter than the others
(a task record is used whole), and a one-segment document has a loss but no gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from methods.attention import rotate
from methods.backbone import Backbone
from methods.token_loss import TokenLoss
from methods.uio.adapters import UIOAdapters
from methods.uio.config import UIOTrainConfig
from methods.uio.kernels import decoder_attention
from methods.uio.memory import encode, transfer


class MemoryPrefixAttention:
    """Decoder attention of one segment over `[transfer(memories) ; segment]`, differentiable end to end.

    Inference caches memory K/V after the transfer head (`MemoryDecoderAttention`); training applies
    the head inside each segment's graph instead, so the loss reaches the head and the memory states.
    """

    def __init__(self, backbone: Backbone, adapters: UIOAdapters, memories: list[torch.Tensor]):
        self.backbone = backbone
        self.memory_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        if memories:
            states = torch.cat(memories, dim=1)  # [L, n*m, D]: slot j of memory i at position i*m + j
            cos, sin = backbone.rope(torch.arange(states.shape[1], device=backbone.device))
            self.memory_kv = [(rotate(k, cos, sin), v) for k, v in transfer(backbone, adapters, states)]

    def attend(self, layer, q, k, v, positions):
        """Rotate the segment at its positions and attend causally over memory + segment."""
        cos, sin = self.backbone.rope(positions)
        keys, values = rotate(k, cos, sin), v
        if self.memory_kv:
            memory_k, memory_v = self.memory_kv[layer]
            keys, values = torch.cat([memory_k, keys], dim=2), torch.cat([memory_v, values], dim=2)
        return decoder_attention(rotate(q, cos, sin), keys, values, self.backbone.scale)


def segment_hidden(backbone: Backbone, adapters: UIOAdapters, ids: torch.Tensor, memories: list[torch.Tensor]):
    """`[l, D]` final hidden states of a segment's tokens decoded after `memories` (each `[L, m, D]`).

    Args:
        backbone: the frozen decoder.
        adapters: UIO's adapters (the transfer head is used here).
        ids: `[l]` token ids of the segment.
        memories: memory states of the earlier segments, oldest first.
    """
    start = sum(memory.shape[1] for memory in memories)
    positions = torch.arange(start, start + ids.numel(), device=backbone.device)
    attention = MemoryPrefixAttention(backbone, adapters, memories)
    return backbone(backbone.embed(ids[None]), positions, attention)[0]


def segment_loss(backbone: Backbone, adapters: UIOAdapters, ids: torch.Tensor, memories: list[torch.Tensor]):
    """Mean next-token cross-entropy within a segment decoded after `memories` (the official segment loss)."""
    hidden = segment_hidden(backbone, adapters, ids, memories)
    return -backbone.token_logprobs(hidden[:-1], ids[1:]).mean()


class Document:
    """One document's segments, encoder graphs and memory leaves, with the flush every strategy uses.

    Without `token_loss` a document of >= 2 whole segments gets the official loss; any other (a short text
    used whole) gets every prediction's NLL as a `TokenLoss`, as the official loss needs whole segments. With
    one, a document is any length >= 2 tokens, the last segment possibly shorter.
    """

    def __init__(
        self,
        backbone: Backbone,
        adapters: UIOAdapters,
        input_ids: torch.Tensor,
        segment: int,
        m: int,
        token_loss: TokenLoss | None = None,
    ):
        if input_ids.numel() < 2:
            raise ValueError("a training document needs at least 2 tokens")
        self.backbone, self.adapters, self.memory_tokens = backbone, adapters, m
        self.input_ids = input_ids.to(backbone.device)
        if token_loss is None and (input_ids.numel() % segment or input_ids.numel() < 2 * segment):
            token_loss = TokenLoss.every_token(self.input_ids)
        self.segments = self.input_ids.split(segment)
        self.segment, self.token_loss = segment, token_loss
        self.graphs: dict[int, torch.Tensor] = {}  # segment index -> memory with its encoder graph
        self.leaves: list[torch.Tensor] = []
        self.encoder_backwards = 0  # backward passes through encoder graphs (what `tbptt` pays O(T*S) of)
        self.losses: list[float] = []

    def __len__(self) -> int:
        return len(self.segments)

    def encode(self, index: int) -> torch.Tensor:
        """Memory of segment `index` with its graph; also kept as a detached leaf that gathers gradient."""
        memory = encode(self.backbone, self.adapters, self.segments[index][None], self.memory_tokens)[:, 0]
        memory.register_hook(self._count)
        self.graphs[index] = memory
        self.leaves.append(memory.detach().requires_grad_())
        return memory

    def _count(self, grad: torch.Tensor) -> None:
        self.encoder_backwards += 1

    def loss(self, index: int, memories: list[torch.Tensor]) -> torch.Tensor | None:
        """Loss of segment `index` over `memories` (None: no weighted prediction in it); its value is logged."""
        if self.token_loss is None:
            loss = segment_loss(self.backbone, self.adapters, self.segments[index], memories)
        else:
            first = index * self.segment + 1  # the token its first position predicts
            predicted = min(self.segments[index].numel(), self.input_ids.numel() - first)
            if not self.token_loss.counts(first, predicted):
                return None
            hidden = segment_hidden(self.backbone, self.adapters, self.segments[index], memories)
            loss = self.token_loss.stretch(self.backbone, hidden[:predicted], first) / self.token_loss.total
        self.losses.append(float(loss.detach()))
        return loss

    def value(self) -> float:
        """The document's loss: the mean of its segment losses (official), or the weighted mean of its predictions."""
        if self.token_loss is None:
            return sum(self.losses) / len(self.losses)
        return sum(self.losses)

    def flush(self, index: int | None) -> None:
        """Backpropagate segment `index`'s encoder graph once with its leaf's gradient, then free it."""
        if index is None or index not in self.graphs:
            return
        graph, leaf = self.graphs.pop(index), self.leaves[index]
        if leaf.grad is not None:
            graph.backward(leaf.grad)
        leaf.requires_grad_(False)  # later losses need not compute a gradient nobody will use


def bptt(doc: Document, config: UIOTrainConfig, draw: Callable[[int], int]) -> None:
    """Full backpropagation: the sum of all losses through every encoder graph at once."""
    memories, total = [], None
    for index in range(len(doc)):
        loss = doc.loss(index, memories) if index else None
        if loss is not None:
            total = loss if total is None else total + loss
        if index < len(doc) - 1:
            memories.append(doc.encode(index))
    _backward(total)


def tbptt(doc: Document, config: UIOTrainConfig, draw: Callable[[int], int]) -> None:
    """Plain truncated BPTT: each loss goes through the graphs of the `window` most recent memories."""
    window = config.window
    for index in range(len(doc)):
        if index:
            memories = [doc.graphs[s] if s >= index - window else doc.leaves[s].detach() for s in range(index)]
            _backward(doc.loss(index, memories), retain_graph=True)
            doc.graphs.pop(index - window, None)  # no later loss reaches it
        if index < len(doc) - 1:
            doc.encode(index)


def incremental(doc: Document, config: UIOTrainConfig, draw: Callable[[int], int]) -> None:
    """Incremental TBPTT: leaves gather gradient; a graph is flushed once, when it leaves the FIFO window."""
    window = config.window
    for index in range(len(doc)):
        if index:
            _backward(doc.loss(index, doc.leaves))
        if index < len(doc) - 1:
            doc.encode(index)
        doc.flush(index - window if index >= window else None)
    for index in sorted(doc.graphs):
        doc.flush(index)


def unbiased(doc: Document, config: UIOTrainConfig, draw: Callable[[int], int]) -> None:
    """Unbiased incremental TBPTT: reservoir of `window` graphs, new leaf gradients scaled by max(1, k/S).

    Without `config.compensation` the factor is 1 (the official `train.py`).
    """
    window = config.window
    reservoir: list[int | None] = []
    for index in range(len(doc)):
        if index:
            saved = [leaf.grad for leaf in doc.leaves]
            for leaf in doc.leaves:
                leaf.grad = None
            _backward(doc.loss(index, doc.leaves))
            # 1 / P(a memory < index is still in the reservoir)
            factor = max(1.0, index / window) if config.compensation else 1.0
            for leaf, before in zip(doc.leaves, saved, strict=True):
                if leaf.grad is not None:
                    leaf.grad = leaf.grad * factor + (before if before is not None else 0)
                else:
                    leaf.grad = before
        # The last segment has no later loss: it is not encoded, but its draw is made as in the official code.
        newest = None
        if index < len(doc) - 1:
            doc.encode(index)
            newest = index
        if index < window:
            reservoir.append(newest)
            continue
        slot = draw(index)
        if slot < window:
            doc.flush(reservoir[slot])
            reservoir[slot] = newest
        else:
            doc.flush(newest)
    for index in reservoir:
        doc.flush(index)


def _backward(loss: torch.Tensor | None, retain_graph: bool = False) -> None:
    """Backpropagate a segment's loss; a segment with no weighted prediction has none."""
    if loss is not None:
        loss.backward(retain_graph=retain_graph)


RUNS: dict[str, Callable[[Document, UIOTrainConfig, Callable[[int], int]], None]] = {
    "bptt": bptt, "tbptt": tbptt, "incremental": incremental, "unbiased": unbiased,
}  # fmt: skip


def reservoir_draws(generator: torch.Generator | None = None, draws: list[int] | None = None) -> Callable[[int], int]:
    """`draw(k)`: a uniform integer in [0, k] (Algorithm R), from `draws` in order when given, else `generator`."""
    given: Iterator[int] | None = iter(draws) if draws is not None else None

    def draw(k: int) -> int:
        if given is not None:
            value = next(given, None)
            if value is None:
                raise ValueError(f"no reservoir draw left for segment {k} (one per segment k >= window)")
            if not 0 <= value <= k:
                raise ValueError(f"reservoir draw at segment {k} must be in [0, {k}], got {value}")
            return value
        return int(torch.randint(0, k + 1, (1,), generator=generator))

    return draw


def run_document(
    backbone: Backbone,
    adapters: UIOAdapters,
    input_ids: torch.Tensor,
    segment: int,
    memory_tokens: int,
    config: UIOTrainConfig,
    draw: Callable[[int], int],
    token_loss: TokenLoss | None = None,
) -> Document:
    """Accumulate one document's gradient into the adapters' `.grad` under `config.strategy`.

    With a `TokenLoss`, segment 0's weighted predictions are scored first, without a gradient (none reaches
    the adapters from them), so the document's value is the whole weighted mean.
    """
    doc = Document(backbone, adapters, input_ids, segment, memory_tokens, token_loss)
    if doc.token_loss is not None:
        with torch.no_grad():
            doc.loss(0, [])
    RUNS[config.strategy](doc, config, draw)
    return doc


def document_gradients(
    model,
    input_ids: torch.Tensor,
    strategy: str,
    window: int,
    seed: int | None = None,
    draws: list[int] | None = None,
    compensation: bool = True,
) -> dict[str, torch.Tensor]:
    """The gradient of every trainable parameter of a `UIO` model for one document.

    Args:
        model: a `methods.uio.model.UIO`.
        input_ids: `[T * segment]` token ids.
        strategy: one of `STRATEGIES`.
        window: S, the number of encoder graphs kept.
        seed: seeds the reservoir's draws (`unbiased`); None uses torch's global generator.
        draws: explicit reservoir draws, one per segment index k >= S, each in [0, k] (overrides `seed`).
        compensation: `unbiased` scales new leaf gradients by max(1, k/S) (False: the official `train.py`).

    Returns:
        parameter name -> gradient (zeros where none reached it).
    """
    config = UIOTrainConfig(strategy=strategy, window=window, compensation=compensation)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    parameters = dict(model.adapters.named_parameters())
    trainable = {name: p for name, p in parameters.items() if p.requires_grad}
    for parameter in trainable.values():
        parameter.grad = None
    run_document(
        model.backbone, model.adapters, input_ids, model.config.segment, model.config.memory_tokens, config,
        reservoir_draws(generator, draws),
    )  # fmt: skip
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in trainable.items()}

"""InfLLM: attention sinks + a local window + the top-k most relevant blocks of the distant past (Xiao et al., 2024).

Paper: https://arxiv.org/abs/2402.04617; official code thunlp/InfLLM (`inf_llm/attention/context_manager.py`,
`dot_production_attention/torch_impl.py`, `utils/greedy_search.py`). Training-free: the frozen model
attends, per layer, over its own context memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import model_validator

from methods import flops
from methods.attention import rotate
from methods.base import MethodConfig, register_method
from methods.baselines.infllm_blocks import BlockStore, representative_key
from methods.decoder import DecoderMethod, spans
from methods.kv_buffer import KVBuffer


class InfLLMConfig(MethodConfig):
    """Defaults: the official Mistral-7B / Llama-3-8B configs (`config/*-inf-llm.yaml`).

    Per layer, each query attends in one softmax to: its local window (the `n_local` tokens up to and
    including itself, at their true relative positions), the `n_init` first tokens of the document,
    the `topk` memory blocks (of `block_size` tokens) retrieved for its execution block of
    `exc_block_size` queries, and the tokens older than its window not yet packed into a block. Keys
    are cached before RoPE; every non-local key is seen at relative position `n_local - 1`. A block is
    retrieved by its representative key: per head, the mean of the `repr_topk` keys that received the
    most attention from the queries that had them in their local window. Prefill feeds all but the
    last prompt token in chunks of `chunk_size`, then the last one alone; decoding retrieves per token.
    With `offload` (`auto`: on CUDA), blocks live in host memory and at most `max_cached_block` of
    them per layer on the device, least recently retrieved evicted first.

    Deviations from the official code:
    - `score()` is causal: the queries of an execution block retrieve with the mean query of the
      execution block before them, not their own block's mean (official), which includes the queries
      of the tokens after each one, so a token's log-prob would depend on the tokens it precedes.
      `score_lookahead=True` restores the official rule in `score()` (samples are then marked
      `causal_score: false`, and perplexity refuses it unless its `allow_noncausal` is set).
      Prefill and decode follow the official code: a prompt is fully known, and a decoded token
      retrieves with its own query.
    - RoPE is the model's own rotary table, with its `rope_scaling`; the official `RotaryEmbeddingESM`
      rebuilds one from a `base` in the YAML file and ignores the model's scaling.
    - Each key is seen once by each query. The official torch path offsets the non-local mask by the
      whole chunk's length instead of the execution block's position, so in prefill the first queries
      of an execution block also see, at distance `n_local - 1`, up to `exc_block_size - 1` keys
      already in their local window (counted twice); decoding (one query per step) is unaffected.
    - The softmax runs in float32 (the official torch path: in the model's dtype); the Triton kernel
      (`fattn`), the second CUDA stream, faiss and the `lru-s` cache strategy are not implemented
      (the official defaults are the torch path and `lru`).
    - One document at a time, as the official code in practice (no batch inference, issue #34).
    """

    block_size: int = 128
    n_init: int = 128
    n_local: int = 4096
    topk: int = 16
    repr_topk: int = 4
    max_cached_block: int = 32
    exc_block_size: int = 512
    chunk_size: int = 8192
    offload: Literal["auto", "on", "off"] = "auto"
    score_lookahead: bool = False

    @classmethod
    def small(cls) -> InfLLMConfig:
        """The official configs for 4K-context models (Vicuna-7B, MiniCPM-2B): a 2K window, 16 retrieved blocks.

        Used for the embedded 8K SmolLM2 so that a 4K-8K input already retrieves from past the window.
        """
        return cls(n_local=2048, topk=16)

    @model_validator(mode="after")
    def _check(self) -> InfLLMConfig:
        sizes = ("block_size", "n_local", "topk", "repr_topk", "max_cached_block", "exc_block_size", "chunk_size")
        if self.n_init < 0 or any(getattr(self, name) < 1 for name in sizes):
            raise ValueError(f"need n_init >= 0 and {', '.join(sizes)} >= 1")
        if self.exc_block_size > self.n_local:
            raise ValueError("exc_block_size must be <= n_local (an execution block must fit the local window)")
        if self.repr_topk > self.block_size:
            raise ValueError("repr_topk must be <= block_size")
        if self.topk > self.max_cached_block:
            raise ValueError("topk must be <= max_cached_block (the retrieved blocks must fit the device cache)")
        return self


# Queries per attention step inside an execution block. Each step attends over the local keys its own
# queries can see (n_local + 127, where the official torch path takes n_local + 512 for the whole block),
# and its logits stay small (2 MB per head at n_local 4096), so steps reuse memory instead of mapping more.
QUERY_ROWS = 128


@dataclass(frozen=True)
class QueryRows:
    """Queries `[start, stop)` of an execution block attended together, and the keys each cannot see."""

    start: int
    stop: int
    local_from: int  # their local keys are `[local_from, stop)`
    local_hidden: list[tuple[int, torch.Tensor]]  # hidden local keys, as `hidden_runs`
    remainder_to: int  # remainder keys some of these queries see: `[remainder[0], remainder_to)`
    remainder_hidden: list[tuple[int, torch.Tensor]]  # hidden remainder keys


@dataclass(frozen=True)
class ExecBlock:
    """One execution block of queries, `[start, stop)` in document positions, and the bookkeeping after it.

    Which tokens are local, initial, remainder or in blocks depends on positions only, so it is planned
    once per chunk and shared by all layers.
    """

    start: int
    stop: int
    local_from: int  # first local key of the block's first query: the frame the block's local keys are rotated in
    remainder: tuple[int, int]  # tokens older than the last query's window, not yet in a block
    rows: list[QueryRows]
    to_init: tuple[int, int]  # tokens moved to the initial tokens after the block
    to_blocks: tuple[int, int]  # tokens packed into new memory blocks after the block


def plan_rows(start: int, stop: int, n_local: int, remainder: tuple[int, int], device) -> list[QueryRows]:
    """Split an execution block into `QUERY_ROWS` steps.

    Each query sees keys at distance `[0, n_local)` locally and remainder keys at distance `>= n_local`.
    """
    out = []
    for begin in range(start, stop, QUERY_ROWS):
        end = min(begin + QUERY_ROWS, stop)
        queries = torch.arange(begin, end)[:, None]
        local_from = max(0, begin - n_local + 1)
        distance = queries - torch.arange(local_from, end)[None]
        local = (distance >= 0) & (distance < n_local)
        remainder_to = max(remainder[0], min(remainder[1], end - n_local))
        old = queries - torch.arange(remainder[0], remainder_to)[None] >= n_local
        out.append(
            QueryRows(begin, end, local_from, hidden_runs(~local, device), remainder_to, hidden_runs(~old, device))
        )
    return out


def hidden_runs(hidden: torch.Tensor, device: torch.device) -> list[tuple[int, torch.Tensor]]:
    """`(first key, mask)` of each run of keys that some query cannot see (`hidden`: `[rows, keys]`).

    A window band hides keys only at its two ends; masking just those runs skips its middle.
    """
    edges = torch.diff(
        hidden.any(0).int(), prepend=torch.zeros(1, dtype=torch.int), append=torch.zeros(1, dtype=torch.int)
    )
    starts, stops = (edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()
    return [(a, hidden[:, a:b].to(device)) for a, b in zip(starts, stops, strict=True)]


def two_stage_attention(near, far, far_masked_from: int, queries: int):
    """Attention of query rows over local keys and over distant keys, in one softmax.

    The stages use different query rotations, so their logits come from two matmuls; the softmax is
    taken over both in place, without concatenating them. Rows are `[1, Hkv, rep * T, d]` (query
    heads grouped under their KV head, GQA), queries already scaled.

    Args:
        near: (queries, keys, values, hidden) of the local stage; hidden: `hidden_runs` of the keys.
        far: the same for retrieved, initial and remainder keys; `hidden` counts keys from
            `far_masked_from` on (the remainder), the others are seen by every query.
        far_masked_from: first far key the mask applies to.
        queries: `T`.

    Returns:
        `[1, Hkv, rep * T, d]` outputs and `[1, Hkv, rep, S]` the attention each local key received,
        summed over the queries.
    """
    logits = []
    heads = near[0].shape[1] * near[0].shape[2] // queries  # query heads: rows hold rep x T of them per KV head
    for rows, keys, _, hidden in (near, far):
        stage = rows @ keys.transpose(-1, -2)
        offset = far_masked_from if logits else 0
        hidden_pairs = 0.0
        for first, mask in hidden:
            run = stage[..., offset + first : offset + first + mask.shape[1]]
            run.unflatten(2, (-1, queries)).masked_fill_(mask, float("-inf"))
            hidden_pairs += flops.masked_out(mask, run.numel())
        computed = queries * keys.shape[-2]
        flops.pairs(heads, rows.shape[-1], computed - hidden_pairs / heads, computed)
        logits.append(stage)
    peak = torch.stack([stage.amax(-1) for stage in logits if stage.shape[-1]]).amax(0)[..., None]
    for stage in logits:
        stage.sub_(peak).exp_()
    total = logits[0].sum(-1, keepdim=True) + logits[1].sum(-1, keepdim=True)
    out = (logits[0] @ near[2] + logits[1] @ far[2]) / total
    weights = total.reciprocal().unflatten(2, (-1, queries)).transpose(-1, -2)  # [1, Hkv, rep, 1, T]
    received = (weights @ logits[0].unflatten(2, (-1, queries))).squeeze(-2)
    flops.matmul(2.0 * logits[0].numel())
    return out, received


class LayerMemory:
    """One layer's context memory, keys before RoPE."""

    def __init__(self, blocks: BlockStore) -> None:
        # tokens neither initial nor in a block (the window and the remainder), from position `origin`
        self.recent = KVBuffer()
        self.scores: torch.Tensor | None = None  # [1, H, len(recent)] local attention each recent key received
        self.previous_query: torch.Tensor | None = None  # [H * d] mean global query of the last execution block
        self.origin = 0
        self.init = KVBuffer()  # the first n_init tokens
        self.blocks = blocks

    def recent_slice(self, span: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of recent tokens at positions `[from, to)`."""
        window = slice(span[0] - self.origin, span[1] - self.origin)
        return self.recent.k[:, :, window], self.recent.v[:, :, window]

    def nbytes(self) -> int:
        """Bytes on the compute device."""
        scores = 0 if self.scores is None else self.scores.numel() * self.scores.element_size()
        return self.recent.nbytes() + scores + self.init.nbytes() + self.blocks.device_bytes()


class ContextMemory:
    """InfLLM's per-layer attention for one document."""

    def __init__(self, backbone, config: InfLLMConfig, offload: bool) -> None:
        self.backbone, self.config = backbone, config
        device = backbone.device
        self.layers = [
            LayerMemory(BlockStore(device, config.block_size, offload, config.max_cached_block))
            for _ in backbone.layers
        ]
        # A local slice is rotated in its own frame (keys at 0..len-1), as the official code does;
        # only relative positions matter, and they stay below n_local.
        self.local_rope = backbone.rope(torch.arange(config.n_local + config.exc_block_size))
        self.global_rope = backbone.rope(torch.tensor([config.n_local - 1]))
        self.length = 0  # positions attended by every layer
        self.start = 0  # first position still in the remainder
        self.init_length = 0
        self.block_count = 0
        self._planned_for: torch.Tensor | None = None
        self.causal = False  # retrieve with the previous execution block's mean query (InfLLM.score)

    def _plan(self, positions: torch.Tensor) -> None:
        """Execution blocks of a chunk of `len(positions)` new tokens and their masks, for all layers."""
        cfg = self.config
        first, total = self.length, positions.numel()
        self.plan = []
        for offset in range(0, total, cfg.exc_block_size):
            start, stop = first + offset, first + min(offset + cfg.exc_block_size, total)
            remainder = (self.start, max(self.start, stop - cfg.n_local))
            rows = plan_rows(start, stop, cfg.n_local, remainder, self.backbone.device)
            # After the block, as the official `append_global`: the initial tokens fill first, then
            # every full block of tokens older than the window is packed.
            pending = stop - self.start
            take = max(0, min(cfg.n_init - self.init_length, pending - cfg.n_local))
            to_init = (self.start, self.start + take)
            self.start, self.init_length = to_init[1], self.init_length + take
            packed = max(0, (stop - self.start - cfg.n_local) // cfg.block_size)
            to_blocks = (self.start, self.start + packed * cfg.block_size)
            self.start, self.block_count = to_blocks[1], self.block_count + packed
            local_from = max(0, start - cfg.n_local + 1)
            self.plan.append(ExecBlock(start, stop, local_from, remainder, rows, to_init, to_blocks))
        self._planned_for = positions

    def attend(self, layer, q, k, v, positions):
        """Attend a chunk block by block over local, initial, retrieved and remainder keys; then update memory."""
        if positions is not self._planned_for:
            self._plan(positions)
        memory = self.layers[layer]
        memory.recent.append(k, v)
        fresh = q.new_zeros(1, q.shape[1], k.shape[2], dtype=torch.promote_types(q.dtype, torch.float32))
        memory.scores = fresh if memory.scores is None else torch.cat([memory.scores, fresh], dim=-1)
        q_global = rotate(q, *self.global_rope)
        first = self.plan[0].start
        out = []
        for block in self.plan:
            queries = slice(block.start - first, block.stop - first)
            out.append(self._attend_block(memory, q[:, :, queries], q_global[:, :, queries], block))
            self._update(memory, block)
            memory.previous_query = q_global[:, :, queries].mean(dim=2).flatten()
        consumed = self.plan[-1].to_blocks[1] - memory.origin
        memory.recent.drop(0, consumed)
        memory.scores = memory.scores[..., consumed:]
        memory.origin += consumed
        if layer == len(self.layers) - 1:
            self.length = self.plan[-1].stop
        return torch.cat(out, dim=2).to(q.dtype)

    def _attend_block(self, memory: LayerMemory, q, q_global, block: ExecBlock) -> torch.Tensor:
        """Retrieve blocks for the execution block, then attend it `QUERY_ROWS` queries at a time."""
        wide = memory.scores.dtype  # attention in float32 at least
        kv_heads = memory.recent.k.shape[1]
        span = block.stop - block.local_from
        cos, sin = self.local_rope
        keys, values = memory.recent_slice((block.local_from, block.stop))
        keys, values = rotate(keys, cos[:span], sin[:span]).to(wide), values.to(wide)
        at = slice(block.start - block.local_from, span)
        near_q = rotate(q, cos[at], sin[at])
        far_k, far_v = [], []
        if memory.blocks.count:
            # Blocks exist only after n_local tokens, so an execution block came before this one.
            query = memory.previous_query if self.causal else q_global.mean(dim=2).flatten()
            chosen = memory.blocks.retrieve(query, self.config.topk)
            block_k, block_v = memory.blocks.fetch(chosen)
            far_k.append(block_k)
            far_v.append(block_v)
        if memory.init.length:
            far_k.append(memory.init.k)
            far_v.append(memory.init.v)
        rest_k, rest_v = memory.recent_slice(block.remainder)
        far_k, far_v = torch.cat([*far_k, rest_k], dim=2).to(wide), torch.cat([*far_v, rest_v], dim=2).to(wide)
        seen_by_all = far_k.shape[2] - rest_k.shape[2]
        out = []
        for rows in block.rows:
            r = slice(rows.start - block.start, rows.stop - block.start)
            n = rows.stop - rows.start
            local = slice(rows.local_from - block.local_from, rows.stop - block.local_from)
            far = seen_by_all + rows.remainder_to - block.remainder[0]
            attended, received = two_stage_attention(
                (
                    self._grouped(near_q[:, :, r], kv_heads, wide),
                    keys[:, :, local],
                    values[:, :, local],
                    rows.local_hidden,
                ),
                (
                    self._grouped(q_global[:, :, r], kv_heads, wide),
                    far_k[:, :, :far],
                    far_v[:, :, :far],
                    rows.remainder_hidden,
                ),
                seen_by_all,
                n,
            )
            out.append(attended.unflatten(2, (-1, n)).flatten(1, 2))
            window = slice(rows.local_from - memory.origin, rows.stop - memory.origin)
            memory.scores[..., window] += received.flatten(1, 2)
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]

    def _grouped(self, x: torch.Tensor, kv_heads: int, dtype: torch.dtype) -> torch.Tensor:
        """`[1, H, T, d]` -> `[1, Hkv, rep * T, d]` rows in `dtype`, scaled for the softmax."""
        return (x.to(dtype) * self.backbone.scale).unflatten(1, (kv_heads, -1)).flatten(2, 3)

    def _update(self, memory: LayerMemory, block: ExecBlock) -> None:
        """Move the planned tokens into the initial tokens and into new memory blocks."""
        if block.to_init[1] > block.to_init[0]:
            memory.init.append(*memory.recent_slice(block.to_init))
        size = self.config.block_size
        for begin in range(block.to_blocks[0], block.to_blocks[1], size):
            keys, values = memory.recent_slice((begin, begin + size))
            scores = memory.scores[..., begin - memory.origin : begin - memory.origin + size]
            memory.blocks.append(keys, values, representative_key(keys, scores, self.config.repr_topk))

    def nbytes(self) -> int:
        """Bytes on the compute device over all layers."""
        return sum(memory.nbytes() for memory in self.layers)

    def host_bytes(self) -> int:
        """Bytes of offloaded blocks in host memory over all layers."""
        return sum(memory.blocks.host_bytes() for memory in self.layers)


@register_method("infllm")
class InfLLM(DecoderMethod):
    """InfLLM: linear-cost, training-free; the past is kept in full but only the retrieved part is attended."""

    description = "InfLLM: sinks + local window + top-k retrieved memory blocks (training-free, linear cost)"
    sources = "InfLLM, Xiao et al. 2024, https://arxiv.org/abs/2402.04617; https://github.com/thunlp/InfLLM."
    Config = InfLLMConfig

    def _chunks(self, input_ids: torch.Tensor):
        """As the official greedy search: all but the last token in chunks of `chunk_size`, then the last alone."""
        body = input_ids.numel() - 1
        yield from spans(input_ids, 0, body, self.config.chunk_size)
        if body >= 0:
            yield body, input_ids[body:]

    @property
    def causal_score(self) -> bool:
        """False with `score_lookahead`: retrieval then sees the queries of later tokens of the execution block."""
        return not self.config.score_lookahead

    def score(self, input_ids: torch.Tensor, greedy: bool = False):
        """Log-probs of tokens 1..T-1, retrieving causally unless `score_lookahead` (see the config)."""
        self.attention.causal = self.causal_score
        try:
            return super().score(input_ids, greedy)
        finally:
            self.attention.causal = False

    def beyond_trained_window(self, length: int) -> bool:
        """Relative positions stay below `n_local` whatever the input length."""
        return min(length, self.config.n_local) > self.model.config.max_position_embeddings

    def new_attention(self) -> ContextMemory:
        """An empty context memory."""
        offload = self.config.offload == "on" or (self.config.offload == "auto" and self.backbone.device.type == "cuda")
        return ContextMemory(self.backbone, self.config, offload)

    def attention_bytes(self) -> int:
        """Bytes of the context memory on the compute device (with offload: without the host blocks)."""
        return self.attention.nbytes()

    def host_state_bytes(self) -> int:
        """Bytes of memory blocks offloaded to host memory."""
        return self.attention.host_bytes()

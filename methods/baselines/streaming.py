"""StreamingLLM: attention sinks plus a sliding window, keys cached before RoPE (Xiao et al., 2023).

Paper: https://arxiv.org/abs/2309.17453; official code mit-han-lab/streaming-llm
(`streaming_llm/kv_cache.py`, `pos_shift/modify_llama.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator

from methods import flops
from methods.attention import causal_attention, rotate, sdpa
from methods.base import MethodConfig, register_method
from methods.decoder import DecoderMethod, spans
from methods.kv_buffer import KVBuffer

FILL_CHUNK = 2048  # full attention's default chunk: while the window fills, streaming costs what full costs


class StreamingConfig(MethodConfig):
    """Sinks + window. Defaults 4 + 2044 (the paper's best Llama-2 PG19 setting, a 2048 cache).

    Semantics, as in the official cache: the first `n_sink` tokens of the document stay; a token
    attends to the sinks, the `window` tokens before it, and itself. Positions follow "pos shift":
    keys are rotated by their index in the cache and the query by the cache length, so a recent key
    is at its true distance and sink `i` at distance `min(p, n_sink + window) - i`.
    Deviation: the official code feeds one token per step; here a chunk of `chunk_size` tokens is
    processed at once with a per-query mask and per-query sink rotation, which gives the same
    attention as token-by-token streaming (tested). The first `n_sink + window` tokens, where nothing
    is evicted yet, go in chunks of 2048 (full attention's).
    """

    n_sink: int = 4
    window: int = 2044
    chunk_size: int = 512

    @model_validator(mode="after")
    def _check(self) -> StreamingConfig:
        if self.n_sink < 0 or self.window < 1 or self.chunk_size < 1:
            raise ValueError("need n_sink >= 0, window >= 1, chunk_size >= 1")
        return self


class SinkWindowAttention:
    """Per-layer cache of un-rotated keys: sinks (positions < n_sink) and the last `window` others.

    Entries stay in position order (sinks first), so the cache is sliced, never gathered.
    """

    def __init__(self, backbone, n_sink: int, window: int) -> None:
        self.backbone = backbone
        self.n_sink, self.window = n_sink, window
        self.cache = [KVBuffer() for _ in backbone.layers]
        self.cached_positions = torch.zeros(0, dtype=torch.long)
        self._prepared_for: torch.Tensor | None = None

    def _prepare(self, positions: torch.Tensor) -> None:
        """Mask and rotation tables for one chunk; shared by all layers (same positions everywhere)."""
        device = self.backbone.device
        queries = positions.cpu()
        keys = torch.cat([self.cached_positions, queries])
        s, w = self.n_sink, self.window
        is_sink = keys < s
        self.sinks = int(is_sink.sum())
        visible = (keys[None] <= queries[:, None]) & (is_sink[None] | (keys[None] >= queries[:, None] - w))
        self.mask = visible.to(device)
        # Until the first eviction the mask is plain causal; SDPA then skips the masked half of the work.
        self.causal = torch.equal(visible, torch.ones_like(visible).tril(keys.numel() - queries.numel()))
        # Local frame for recent keys: the oldest non-sink key sits at index n_sink, as in the official cache.
        origin = int(keys[self.sinks :].min()) if keys.numel() > self.sinks else s
        local = lambda p: (p - origin + s).clamp(min=0)  # noqa: E731
        rope = self.backbone.rope
        self.k_rope = rope(torch.where(is_sink, keys, local(keys)).to(device))
        q_sink, q_recent = queries.clamp(max=s + w), local(queries)
        self.q_rope = rope(q_recent.to(device))
        # Sinks see each query at min(p, n_sink + window); while that equals the query's local position
        # (always when decoding, and before the first eviction) one rotation serves every key.
        self.q_sink_rope = None if self.sinks == 0 or torch.equal(q_sink, q_recent) else rope(q_sink.to(device))
        recent = keys.numel() - self.sinks
        self.evict = (self.sinks, self.sinks + max(0, recent - w))
        self.kept_positions = torch.cat([keys[: self.evict[0]], keys[self.evict[1] :]])
        self._prepared_for = positions

    def attend(self, layer, q, k, v, positions):
        """Attend a chunk over [sinks ; window ; chunk] with pos-shifted rotations, then evict."""
        if positions is not self._prepared_for:
            self._prepare(positions)
        buffer = self.cache[layer]
        buffer.append(k, v)
        keys, values, scale = rotate(buffer.k, *self.k_rope), buffer.v, self.backbone.scale
        if self.q_sink_rope is None and self.causal:
            out = causal_attention(rotate(q, *self.q_rope), keys, values, scale)
        elif self.q_sink_rope is None:
            out = sdpa(rotate(q, *self.q_rope), keys, values, attn_mask=self.mask, scale=scale)
        else:
            out = self._attend_split(q, keys, values)
        buffer.drop(*self.evict)
        if layer == len(self.cache) - 1:
            self.cached_positions = self.kept_positions
        return out

    def _attend_split(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attention where sinks and recent keys need different query rotations, in one fused SDPA call.

        The exact sink logits are computed apart ([B, H, T, n_sink], cheap) and enter as extra query
        dimensions that meet one-hot sink keys; recent keys are zero there. Head size grows by n_sink
        (1.06x the work at 4 sinks) instead of doubling with two rotations side by side.
        """
        batch, kv_heads, _, dim = keys.shape
        n = self.sinks
        sink_q = rotate(q, *self.q_sink_rope).unflatten(1, (kv_heads, -1))  # [B, Hkv, rep, T, d]: SDPA's GQA order
        sink_logits = (sink_q @ keys[:, :, None, :n].transpose(-1, -2)).flatten(1, 2)  # [B, H, T, n]
        flops.matmul(2.0 * sink_q.numel() * n, needed=False)  # the sink pairs, counted once by the SDPA below
        query = torch.cat([rotate(q, *self.q_rope), sink_logits], dim=-1)
        one_hot = torch.eye(n, dtype=keys.dtype, device=keys.device).expand(batch, kv_heads, n, n)
        sink_keys = torch.cat([keys.new_zeros(batch, kv_heads, n, dim), one_hot], dim=-1)
        key = torch.cat([sink_keys, F.pad(keys[:, :, n:], (0, n))], dim=2)
        # Values padded to the same width: SDPA's fused CPU kernel needs it (2x faster than its fallback).
        out = sdpa(query, key, F.pad(values, (0, n)), attn_mask=self.mask, scale=self.backbone.scale, seen_dim=dim)
        return out[..., :dim]

    def nbytes(self) -> int:
        """Bytes of K and V held over all layers."""
        return sum(buffer.nbytes() for buffer in self.cache)


@register_method("streaming")
class Streaming(DecoderMethod):
    """StreamingLLM: constant memory; forgets everything outside the sinks and the window."""

    description = "StreamingLLM: n_sink attention sinks + a sliding window of recent tokens (constant memory)"
    sources = "StreamingLLM, Xiao et al. 2023, https://arxiv.org/abs/2309.17453; https://github.com/mit-han-lab/streaming-llm."
    Config = StreamingConfig

    def _chunks(self, input_ids: torch.Tensor):
        """Chunks of `chunk_size`, except while the window fills.

        Until then nothing is evicted and attention is plain causal, so that part goes in chunks of
        `FILL_CHUNK` (full attention's default) and costs what full attention costs.
        """
        fill = min(input_ids.numel(), max(0, self.config.n_sink + self.config.window - self.position))
        yield from spans(input_ids, 0, fill, FILL_CHUNK)
        yield from spans(input_ids, fill, input_ids.numel(), self.config.chunk_size)

    def beyond_trained_window(self, length: int) -> bool:
        """Pos-shift keeps positions below `n_sink + window` whatever the input length."""
        return min(length, self.config.n_sink + self.config.window) > self.model.config.max_position_embeddings

    def new_attention(self) -> SinkWindowAttention:
        """An empty sink + window cache."""
        return SinkWindowAttention(self.backbone, self.config.n_sink, self.config.window)

    def attention_bytes(self) -> int:
        """Bytes of the sink + window cache."""
        return self.attention.nbytes()

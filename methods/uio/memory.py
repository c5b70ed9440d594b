"""UIO-LLMs' memory path: compress segments (`encode`), turn memories into decoder K/V (`transfer`), read them.

Reads like the paper's Fig. 2 (arXiv 2406.18173): `encode` (segment -> per-layer memory states),
`transfer` (memory states -> decoder K/V), `MemoryDecoderAttention` (decoder attention over
[memory ; raw open segment ; block]). The method (`methods.uio.model.UIO`), its trainer and the
auto-encoding check all build on these.
"""

from __future__ import annotations

import torch

from methods import flops
from methods.attention import rotate
from methods.backbone import Backbone, rms_norm
from methods.kv_buffer import KVBuffer
from methods.uio.adapters import UIOAdapters
from methods.uio.kernels import compression_attention, compression_positions, decoder_attention


def encode(
    backbone: Backbone,
    adapters: UIOAdapters,
    segments: torch.Tensor,
    memory_tokens: int,
    memory_inputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compress segments into memory: per layer, the post-`input_layernorm` states at the `<mem>` positions.

    The encoder is the frozen model with the encoder LoRA on q and v. It stops at the last layer's
    attention input, the last thing the memory needs.

    Args:
        backbone: the shared decoder modules.
        adapters: UIO's adapters (encoder LoRA, `<mem>` embedding).
        segments: `[B, l]` token ids of B independent segments.
        memory_tokens: m.
        memory_inputs: `[m, D]` input embeddings of the `<mem>` slots to use instead of the learned `<mem>`
            embedding in every slot (the cramming check optimises them: `harness.controls.cramming`).

    Returns:
        `[L, B, m, D]` memory states.
    """
    batch, length = segments.shape
    inputs = adapters.memory_embedding if memory_inputs is None else memory_inputs
    memory = inputs.to(backbone.embed(segments[:1, :1]).dtype).expand(batch, memory_tokens, -1)
    hidden = torch.cat([backbone.embed(segments), memory], dim=1)
    cos, sin = backbone.rope(compression_positions(length, memory_tokens).to(backbone.device))
    heads, kv_heads, dim = backbone.n_heads, backbone.n_kv_heads, backbone.head_dim
    size = length + memory_tokens
    states = []
    for index, layer in enumerate(backbone.layers):
        x = rms_norm(layer.input_layernorm, hidden)
        states.append(x[:, length:])
        if index == len(backbone.layers) - 1:
            break
        lora = adapters.encoder.layers[index].self_attn
        flops.layer(batch * size, layer, lora.q_proj, lora.v_proj)
        q = lora.q_proj(x).view(batch, size, heads, dim).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(batch, size, kv_heads, dim).transpose(1, 2)
        v = lora.v_proj(x).view(batch, size, kv_heads, dim).transpose(1, 2)
        out = compression_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, memory_tokens, backbone.scale)
        hidden = hidden + layer.self_attn.o_proj(out.transpose(1, 2).reshape(batch, size, -1))
        hidden = hidden + layer.mlp(rms_norm(layer.post_attention_layernorm, hidden))
    return torch.stack(states)


def transfer(
    backbone: Backbone, adapters: UIOAdapters, states: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Transfer head: memory states of one segment -> per-layer decoder K (before RoPE) and V.

    K = m (W_K + B_K A_K), V = m (W_V + B_V A_V) with the transfer LoRA (paper Eq. 2); with B = 0 this
    is exactly the frozen model's K/V of the memory states.

    Args:
        backbone: the shared decoder modules.
        adapters: UIO's adapters (transfer LoRA).
        states: `[L, m, D]` memory states of one segment.

    Returns:
        per layer, `([1, Hkv, m, d], [1, Hkv, m, d])`.
    """
    out = []
    kv_heads, dim = backbone.n_kv_heads, backbone.head_dim
    for index, layer_states in enumerate(states):
        lora = adapters.transfer.layers[index].self_attn
        flops.through(layer_states, lora.k_proj, lora.v_proj)
        k = lora.k_proj(layer_states).view(1, -1, kv_heads, dim).transpose(1, 2)
        v = lora.v_proj(layer_states).view(1, -1, kv_heads, dim).transpose(1, 2)
        out.append((k, v))
    return out


class MemoryDecoderAttention:
    """Decoder attention of one document over `[memory of past segments ; raw open segment ; block]`.

    Positions are contiguous from 0: memory slot j of the i-th kept segment at i*m + j, then the raw
    tokens. Memory keys are rotated once per segment (re-rotated only when `keep_recent` evicts).
    """

    def __init__(self, backbone: Backbone, memory_tokens: int, evicts: bool = False):
        self.backbone = backbone
        self.memory_tokens = memory_tokens
        layers = len(backbone.layers)
        # Eviction renumbers the kept memories from position 0, so it needs their keys before RoPE: held only
        # then (`over_context=keep_recent`), and counted in `nbytes`.
        self.unrotated: list[list[torch.Tensor]] | None = [] if evicts else None  # per segment, per layer
        self.memory_k: list[torch.Tensor | None] = [None] * layers
        self.memory_v: list[torch.Tensor | None] = [None] * layers
        self.raw = [KVBuffer() for _ in range(layers)]

    @property
    def memory_length(self) -> int:
        """Memory slots held (positions taken by memory)."""
        return 0 if self.memory_k[0] is None else self.memory_k[0].shape[2]

    @property
    def kept(self) -> int:
        """Segments whose memory is held."""
        return self.memory_length // self.memory_tokens

    @property
    def raw_length(self) -> int:
        """Raw tokens of the open segment held."""
        return self.raw[0].length

    def add_segment(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append a compressed segment's memory K/V (K before RoPE) and drop the raw K/V it replaces."""
        if self.unrotated is not None:
            self.unrotated.append([k for k, _ in kv])
        self._append_keys([k for k, _ in kv])
        for layer, (_, v) in enumerate(kv):
            self.memory_v[layer] = v if self.memory_v[layer] is None else torch.cat([self.memory_v[layer], v], dim=2)
        self.drop_raw()

    def _append_keys(self, keys: list[torch.Tensor]) -> None:
        """Rotate one segment's memory keys (per layer) at the next memory positions and append them."""
        start = self.memory_length
        cos, sin = self.backbone.rope(torch.arange(start, start + self.memory_tokens, device=self.backbone.device))
        for layer, k in enumerate(keys):
            k = rotate(k, cos, sin)
            self.memory_k[layer] = k if self.memory_k[layer] is None else torch.cat([self.memory_k[layer], k], dim=2)

    def drop_raw(self) -> None:
        """Forget the open segment's raw K/V (its memory, if any, is already added)."""
        self.raw = [KVBuffer() for _ in self.raw]

    def drop_oldest(self) -> None:
        """Evict the oldest segment's memory, renumber the rest from position 0 and empty the raw K/V.

        The raw K/V of the open segment are stale after a drop: its keys sit m positions too far on, and
        from layer 1 on its K/V carry what the tokens read from the evicted memory. The caller decodes
        the open segment again (`UIO._make_room`).
        """
        if self.unrotated is None:
            raise RuntimeError("drop_oldest needs MemoryDecoderAttention(evicts=True)")
        kept = self.unrotated = self.unrotated[1:]
        m = self.memory_tokens
        # a copy: a view would keep the evicted values alive, uncounted
        self.memory_v = [None if v is None or v.shape[2] == m else v[:, :, m:].clone() for v in self.memory_v]
        self.memory_k = [None] * len(self.memory_k)
        for keys in kept:
            self._append_keys(keys)
        self.drop_raw()

    def attend(self, layer, q, k, v, positions):
        """Rotate the block at its positions, cache its raw K/V, attend over memory + raw."""
        cos, sin = self.backbone.rope(positions)
        raw = self.raw[layer]
        raw.append(rotate(k, cos, sin), v)
        keys, values = raw.k, raw.v
        if self.memory_k[layer] is not None:
            keys = torch.cat([self.memory_k[layer], keys], dim=2)
            values = torch.cat([self.memory_v[layer], values], dim=2)
        return decoder_attention(rotate(q, cos, sin), keys, values, self.backbone.scale)

    def nbytes(self) -> int:
        """Bytes of memory K/V, raw K/V and (when evicting) the memory keys before RoPE held."""
        unrotated = [k for keys in self.unrotated or () for k in keys]
        memory = sum(t.numel() * t.element_size() for t in self.memory_k + self.memory_v + unrotated if t is not None)
        return memory + sum(buffer.nbytes() for buffer in self.raw)

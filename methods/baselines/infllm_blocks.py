"""InfLLM's memory blocks of one layer: their K/V, representative keys, retrieval, and the device cache.

Follows thunlp/InfLLM `inf_llm/attention/context_manager.py` (`MemoryUnit`, `CudaCache`, `VectorTensor`,
`get_block_k`, `calc_block_topk`, `remove_lru_blocks`), written device-agnostic.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from methods import flops
from methods.attention import repeat_kv
from methods.kv_buffer import KVBuffer


def representative_key(keys: torch.Tensor, scores: torch.Tensor, repr_topk: int) -> torch.Tensor:
    """The vector a block is retrieved by: per query head, the mean of its `repr_topk` most attended keys.

    Args:
        keys: `[1, Hkv, bs, d]` the block's keys before RoPE.
        scores: `[1, H, bs]` attention each key received from the queries that saw it in their local
            window (summed probabilities), per query head.
        repr_topk: keys averaged per head.

    Returns:
        `[H * d]`: the heads' vectors concatenated (KV heads repeated to the query heads first, GQA).
    """
    heads, dim = scores.shape[1], keys.shape[-1]
    keys = repeat_kv(keys, heads // keys.shape[1])
    top = scores.topk(repr_topk, dim=-1).indices
    picked = keys.gather(2, top[..., None].expand(-1, -1, -1, dim))
    return picked.mean(dim=2).flatten()


class BlockStore:
    """Memory blocks of one layer, in order of position: block `b` holds tokens `[n_init + b*bs, n_init + (b+1)*bs)`.

    Without offload every block stays on the compute device, in one growable buffer like any KV cache
    (retrieved blocks are gathered without a host sync, and shapes alone suffice on the `meta` device).
    With offload (the official layout on GPU) each block has its own host tensor, page-locked when the
    device is CUDA, as the official `MemoryUnit`s (a doubling buffer would hold up to twice the blocks
    in page-locked memory and copy them all at each growth), and `max_cached` of them are copied into
    device slots, least recently retrieved evicted first; representative keys stay on the device, as
    in the official code.
    """

    def __init__(self, device: torch.device, block_size: int, offload: bool, max_cached: int) -> None:
        self.device, self.block_size, self.offload, self.max_cached = device, block_size, offload, max_cached
        self.pinned = offload and device.type == "cuda"
        self.blocks = KVBuffer()  # without offload: [1, Hkv, count * bs, d], token after token
        self.host: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # with offload: K, V `[Hkv, bs, d]` each
        self.reprs: torch.Tensor | None = None  # [count, H * d], on the device
        self.slots: tuple[torch.Tensor, torch.Tensor] | None = None  # device copies: [max_cached, Hkv, bs, d]
        self.cached: OrderedDict[int, int] = OrderedDict()  # block -> slot, least recently retrieved first

    @property
    def count(self) -> int:
        """Number of blocks stored."""
        return 0 if self.reprs is None else self.reprs.shape[0]

    def append(self, keys: torch.Tensor, values: torch.Tensor, representative: torch.Tensor) -> None:
        """Store one block: `[1, Hkv, bs, d]` keys and values before RoPE and its `[H * d]` representative key.

        The block is copied: `keys` and `values` may be views of a buffer that is overwritten later.
        """
        if self.offload:
            for store, x in zip(self.host, (keys[0], values[0]), strict=True):
                block = torch.empty(x.shape, dtype=x.dtype, pin_memory=self.pinned)
                store.append(block.copy_(x))
        else:
            self.blocks.append(keys, values)
        row = representative[None]
        self.reprs = row if self.reprs is None else torch.cat([self.reprs, row])

    def retrieve(self, query: torch.Tensor, topk: int) -> torch.Tensor:
        """Indices (ascending) of the blocks to attend: all when there are at most `topk`, else the `topk` best.

        Args:
            query: `[H * d]` the execution block's mean query, rotated as global queries are; a block's
                score is its dot product with the representative key (the sum of per-head scores), one
                choice shared by all heads as in the official default (`perhead=False`).
            topk: blocks retrieved.
        """
        if self.count <= topk:
            return torch.arange(self.count, device=self.device)
        flops.matmul(2.0 * self.reprs.numel())
        scores = self.reprs @ query.to(self.reprs.dtype)
        return scores.topk(topk).indices.sort().values

    def fetch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[1, Hkv, len(indices) * bs, d]` keys and values of the given blocks, on the device."""
        if not self.offload:
            tokens = indices[:, None] * self.block_size + torch.arange(self.block_size, device=indices.device)
            tokens = tokens.flatten()
            return self.blocks.k.index_select(2, tokens), self.blocks.v.index_select(2, tokens)
        blocks = indices.tolist()
        for block in blocks:  # chosen blocks already on the device become the most recent: never evicted below
            if block in self.cached:
                self.cached.move_to_end(block)
        slots = [self._load(block) for block in blocks]
        keys, values = (s[slots].permute(1, 0, 2, 3).flatten(1, 2)[None] for s in self.slots)
        return keys, values

    def _load(self, block: int) -> int:
        """The device slot holding `block`, copying it from the host (evicting the LRU block) if needed."""
        if block in self.cached:
            self.cached.move_to_end(block)
            return self.cached[block]
        if self.slots is None:
            first = self.host[0][0]
            shape = (self.max_cached, *first.shape)
            self.slots = tuple(torch.empty(shape, dtype=first.dtype, device=self.device) for _ in range(2))
        if len(self.cached) < self.max_cached:
            slot = len(self.cached)
        else:
            _, slot = self.cached.popitem(last=False)
        for device_slots, host in zip(self.slots, self.host, strict=True):
            device_slots[slot].copy_(host[block], non_blocking=True)
        self.cached[block] = slot
        return slot

    def device_bytes(self) -> int:
        """Bytes on the compute device: representative keys, and the blocks (all, or the cached slots)."""
        reprs = 0 if self.reprs is None else self.reprs.numel() * self.reprs.element_size()
        if not self.offload:
            return reprs + self.blocks.nbytes()
        slots = 0 if self.slots is None else sum(s.numel() * s.element_size() for s in self.slots)
        return reprs + slots

    def host_bytes(self) -> int:
        """Bytes of offloaded blocks in host memory (0 without offload)."""
        return sum(block.numel() * block.element_size() for store in self.host for block in store)

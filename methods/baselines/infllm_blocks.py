"""InfLLM's memory blocks of one layer: their K/V, representative keys, retrieval, and the device cache.

Follows thunlp/InfLLM `inf_llm/attention/context_manager.py` (`MemoryUnit`, `CudaCache`, `VectorTensor`,
`get_block_k`, `calc_block_topk`, `remove_lru_blocks`), written device-agnostic.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from methods.attention import repeat_kv


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

    Each block has its own storage, as the official `MemoryUnit`s: storing never copies earlier blocks
    and never reserves spare capacity (a doubling buffer would hold up to twice the blocks, in
    page-locked memory with offload). Without offload every block stays on the compute device. With
    offload (the official layout on GPU) blocks live in host memory (page-locked when the device is
    CUDA) and `max_cached` of them are copied into device slots, least recently retrieved evicted
    first; representative keys stay on the device, as in the official code.
    """

    def __init__(self, device: torch.device, block_size: int, offload: bool, max_cached: int) -> None:
        self.device, self.block_size, self.offload, self.max_cached = device, block_size, offload, max_cached
        self.home = torch.device("cpu") if offload else device
        self.pinned = offload and device.type == "cuda"
        self.keys: list[torch.Tensor] = []  # per block `[Hkv, bs, d]`, on `home`
        self.values: list[torch.Tensor] = []
        self.reprs: torch.Tensor | None = None  # [count, H * d], on the device
        self.slots: tuple[torch.Tensor, torch.Tensor] | None = None  # device copies: [max_cached, Hkv, bs, d]
        self.cached: OrderedDict[int, int] = OrderedDict()  # block -> slot, least recently retrieved first

    @property
    def count(self) -> int:
        """Number of blocks stored."""
        return len(self.keys)

    def append(self, keys: torch.Tensor, values: torch.Tensor, representative: torch.Tensor) -> None:
        """Store one block: `[1, Hkv, bs, d]` keys and values before RoPE and its `[H * d]` representative key.

        The block is copied: `keys` and `values` may be views of a buffer that is overwritten later.
        """
        self.keys.append(self._own(keys[0]))
        self.values.append(self._own(values[0]))
        row = representative[None]
        self.reprs = row if self.reprs is None else torch.cat([self.reprs, row])

    def _own(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of `x` in the blocks' home memory."""
        if self.pinned:
            return torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x)
        return x.to(self.home, copy=True)

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
        scores = self.reprs @ query.to(self.reprs.dtype)
        return scores.topk(topk).indices.sort().values

    def fetch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[1, Hkv, len(indices) * bs, d]` keys and values of the given blocks, on the device."""
        blocks = indices.tolist()
        if not self.offload:
            return torch.cat([self.keys[b] for b in blocks], dim=1)[None], torch.cat(
                [self.values[b] for b in blocks], dim=1
            )[None]
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
            shape = (self.max_cached, *self.keys[0].shape)
            self.slots = tuple(torch.empty(shape, dtype=self.keys[0].dtype, device=self.device) for _ in range(2))
        if len(self.cached) < self.max_cached:
            slot = len(self.cached)
        else:
            _, slot = self.cached.popitem(last=False)
        for device_slots, host in zip(self.slots, (self.keys, self.values), strict=True):
            device_slots[slot].copy_(host[block], non_blocking=True)
        self.cached[block] = slot
        return slot

    def _block_bytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (*self.keys, *self.values))

    def device_bytes(self) -> int:
        """Bytes on the compute device: representative keys, and the blocks (all, or the cached slots)."""
        reprs = 0 if self.reprs is None else self.reprs.numel() * self.reprs.element_size()
        if not self.offload:
            return reprs + self._block_bytes()
        slots = 0 if self.slots is None else sum(s.numel() * s.element_size() for s in self.slots)
        return reprs + slots

    def host_bytes(self) -> int:
        """Bytes of offloaded blocks in host memory (0 without offload)."""
        return self._block_bytes() if self.offload else 0

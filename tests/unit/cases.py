"""The method cases several test files run every method through: (name, options) pairs and small helpers."""

from __future__ import annotations

import torch

from methods.attention import repeat_kv
from methods.base import METHODS

# (name, options) pairs: every registered method with its defaults, plus configs that exercise eviction.
CONFIGS = [(name, {}) for name in METHODS.names()] + [
    ("streaming", {"n_sink": 2, "window": 16, "chunk_size": 8}),
    # compresses mid-prompt and mid-decode
    ("uio", {"segment": 8, "memory_tokens": 2, "lora_rank": 2, "lora_alpha": 8}),
]


def build(name, loaded, **options):
    cls = METHODS.get(name)
    return cls(*loaded, cls.Config(**options))


def ids_of(n, seed=0):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


# Configs whose state a 150-token context fills past its local parts: retrieved blocks, carried memories.
STATEFUL = [
    ("infllm", {"block_size": 16, "n_init": 8, "n_local": 64, "topk": 2, "repr_topk": 2, "max_cached_block": 4,
                "exc_block_size": 32}),
    ("rmt", {"segment": 32, "memory_tokens": 2}),
]  # fmt: skip


def naive_attention(q, k, v, mask, scale):
    """Softmax attention of `[B, H, T, d]` queries over GQA keys, `mask` `[T, S]` (True: seen), all materialised."""
    n_rep = q.shape[1] // k.shape[1]
    scores = (q @ repeat_kv(k, n_rep).transpose(-1, -2)) * scale
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ repeat_kv(v, n_rep)

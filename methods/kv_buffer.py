"""A growable K/V buffer: appends amortised O(1) per token (a torch.cat per decode step is O(N) each)."""

from __future__ import annotations

import torch


class KVBuffer:
    """Keys and values of one layer, `[B, Hkv, n, d]`, stored in a buffer that doubles when full."""

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append `[B, Hkv, T, d]` keys and values."""
        needed = self.length + k.shape[2]
        if self._k is None or needed > self._k.shape[2]:
            capacity = max(needed, 2 * (0 if self._k is None else self._k.shape[2]), 256)
            grown_k = k.new_empty(*k.shape[:2], capacity, k.shape[3])
            grown_v = v.new_empty(*v.shape[:2], capacity, v.shape[3])
            if self._k is not None:
                grown_k[:, :, : self.length] = self._k[:, :, : self.length]
                grown_v[:, :, : self.length] = self._v[:, :, : self.length]
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length : needed] = k
        self._v[:, :, self.length : needed] = v
        self.length = needed

    def drop(self, start: int, stop: int) -> None:
        """Remove entries `[start, stop)`, moving later ones down in place so the capacity stays for appends."""
        if self._k is None or stop <= start:
            return
        tail = slice(stop, self.length)
        moved = self.length - stop
        # clone: source and destination overlap when fewer entries are dropped than follow them
        self._k[:, :, start : start + moved] = self._k[:, :, tail].clone()
        self._v[:, :, start : start + moved] = self._v[:, :, tail].clone()
        self.length -= stop - start

    @property
    def k(self) -> torch.Tensor:
        """`[B, Hkv, n, d]` keys held (a view)."""
        return self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor:
        """`[B, Hkv, n, d]` values held (a view)."""
        return self._v[:, :, : self.length]

    def nbytes(self) -> int:
        """Bytes of the entries held (not of spare capacity)."""
        if self._k is None:
            return 0
        return 2 * self.k.numel() * self._k.element_size()

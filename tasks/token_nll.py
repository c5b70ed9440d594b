"""Per-token negative log-likelihoods stored compactly in a sample's metadata: base64 of float16.

Two bytes a token (267 KB of text for 100K tokens). float16 keeps 11 significant bits: an NLL of 10 nats is
stored within 0.005, far below the 2-nat gains `reports.memory_gain` counts. numpy only, so reports read
it without torch.
"""

from __future__ import annotations

import base64

import numpy as np


def encode(nll: np.ndarray) -> str:
    """`[T]` NLLs (nats) -> base64 text of little-endian float16."""
    return base64.b64encode(np.asarray(nll, dtype="<f2").tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """The float64 `[T]` NLLs `encode` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float64)

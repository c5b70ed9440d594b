"""The machine's measured peak: dense matrix multiplications in the run's dtype on its device, no vendor tables.

Two 2-core machines of this project measured 151 and 340 GFLOP/s in float32: a method's share of the peak
says more than its seconds. The probe runs once a process for each (device, dtype, threads), at the
start of a run (stored with its provenance, `runs.matmul_peak`) and in `lch list --hardware`.
"""

from __future__ import annotations

import functools
import time

import torch

from harness.metering import synchronize

SIZES = {"cpu": 2048, "cuda": 8192}  # square matrices: large enough to run at the BLAS's best on each
REPEATS = 5


def matmul_peak(device: torch.device | str, dtype: torch.dtype) -> dict:
    """`{"gflops", "dtype", "device", "threads", "size"}`: the best of `REPEATS` timed `size`^3 matmuls, warm."""
    device = torch.device(device)
    return dict(_probe(device.type, device.index, dtype, torch.get_num_threads()))  # a copy: the cached one stays


def best_seconds(call, device: torch.device | str = "cpu", repeats: int = REPEATS) -> float:
    """The fastest of `repeats` timed calls, after one untimed (it pays for kernel selection and page faults)."""
    device = torch.device(device)
    call()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def _probe(kind: str, index: int | None, dtype: torch.dtype, threads: int) -> dict:
    device = torch.device(kind, index) if index is not None else torch.device(kind)
    size = SIZES.get(kind, SIZES["cpu"])
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    gflops = 2 * size**3 / best_seconds(lambda: a @ b, device) / 1e9
    return {"gflops": round(gflops, 1), "dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "threads": threads, "size": size}  # fmt: skip

"""Peak memory on CPU: the same work measures the same, whatever earlier samples freed."""

from __future__ import annotations

import time

import pytest
import torch

from harness.metering import Costs, _malloc_trim, peak_memory


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
@pytest.mark.parametrize("kib", [50, 200, 1000])  # below, near and above glibc's dynamic mmap threshold
def test_cpu_peak_memory_of_the_same_work_is_the_same_each_time(kib):
    # glibc hands freed memory out again without the RSS growing: untrimmed, repeats read about 0.
    peaks = []
    for _ in range(3):
        costs = Costs()
        with peak_memory(torch.device("cpu"), costs):
            held = [torch.ones(kib * 256) for _ in range(64 * 1024 // kib)]  # 64 MiB
            time.sleep(0.05)  # the sampler reads the RSS every 5 ms
            del held
        peaks.append(costs.peak_mem_bytes / 2**20)
    assert all(56 <= peak <= 80 for peak in peaks), peaks

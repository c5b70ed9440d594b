"""Cost measurement, the same for every method: wall clocks, peak memory, FLOPs, state bytes.

Rules: CUDA is synchronised before clocks are read; peak
memory is reset per sample and reported above the pre-sample baseline (CUDA peak allocated, or host
RSS sampled every 5 ms on CPU); FLOPs come from `torch.utils.flop_counter` when asked for.

On CPU, glibc keeps memory a previous sample freed and hands it out again without the RSS growing,
so a sample would measure near 0 bytes after one that used more; free heap memory is therefore
returned to the OS (`malloc_trim`) before the baseline is read. Without glibc (macOS) the RSS
numbers of later samples are lower bounds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
import time
from dataclasses import dataclass, field

import psutil
import torch

from methods import flops


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Costs:
    """Costs of one sample."""

    prefill_s: float | None = None  # None: the sample read no prompt (autoencode decodes from memory alone)
    context_prefill_s: float | None = None  # a shared context's prefill (`harness.shared_context`), apart
    # Model FLOPs (`methods.flops`: linear layers + the attention pairs seen), counted from shapes, always
    prefill_flops: float | None = None
    decode_flops: float | None = None
    context_prefill_flops: float | None = None
    decode_s: float = 0.0
    peak_mem_bytes: int = 0
    flops: float | None = None
    others_cpu: float | None = None  # share of the machine's CPU time other processes used meanwhile


class Metered:
    """Proxy of a `LongContextModel` that times `prefill`/`score` (prefill) and `decode` calls."""

    def __init__(self, model, device: torch.device):
        self._model = model
        self._device = device
        self.costs = Costs()

    def __getattr__(self, name):
        attribute = getattr(self._model, name)
        if name == "reconstruct":  # a memory method's optional capability: generation from memory, timed as decode
            return functools.partial(self.timed, "decode_s", attribute)
        return attribute

    def timed(self, bucket: str, fn, *args, **kwargs):
        """Call `fn`, adding its wall time to the `Costs` field `bucket` (`*_s`) and its model FLOPs to `*_flops`."""
        ledger = flops.Ledger()
        synchronize(self._device)
        start = time.perf_counter()
        with flops.counting(ledger):
            result = fn(*args, **kwargs)
        synchronize(self._device)
        setattr(self.costs, bucket, (getattr(self.costs, bucket) or 0.0) + time.perf_counter() - start)
        counted = bucket.removesuffix("_s") + "_flops"
        setattr(self.costs, counted, (getattr(self.costs, counted) or 0.0) + ledger.model_flops)
        return result

    def prefill(self, *args, **kwargs):
        """Timed as prefill."""
        return self.timed("prefill_s", self._model.prefill, *args, **kwargs)

    def score(self, *args, **kwargs):
        """Timed as prefill (scoring a document is one long prefill)."""
        return self.timed("prefill_s", self._model.score, *args, **kwargs)

    def decode(self, *args, **kwargs):
        """Timed as decode."""
        return self.timed("decode_s", self._model.decode, *args, **kwargs)


@dataclass
class _RssSampler:
    interval_s: float = 0.005
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(self.interval_s)


@contextlib.contextmanager
def peak_memory(device: torch.device, costs: Costs):
    """Record the peak memory above the baseline at entry into `costs.peak_mem_bytes`."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        try:
            yield
        finally:
            synchronize(device)
            costs.peak_mem_bytes = torch.cuda.max_memory_allocated(device) - baseline
        return
    _release_free_heap()
    baseline = psutil.Process().memory_info().rss
    sampler = _RssSampler(peak=baseline)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sampler._stop.set()
        thread.join()
        sampler.peak = max(sampler.peak, psutil.Process().memory_info().rss)
        costs.peak_mem_bytes = sampler.peak - baseline


def _busy_seconds(times) -> float:
    """CPU seconds spent busy, summed over all CPUs, from `psutil.cpu_times()`."""
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@contextlib.contextmanager
def cpu_contention(costs: Costs):
    """Record into `costs.others_cpu` the share of the machine's CPU time other processes used during the block.

    A sample timed while other work ran is slower than the method is: the report flags such cells.
    """
    process = psutil.Process()
    machine, own, start = psutil.cpu_times(), process.cpu_times(), time.perf_counter()
    try:
        yield
    finally:
        wall = time.perf_counter() - start
        used = _busy_seconds(psutil.cpu_times()) - _busy_seconds(machine)
        mine = sum(process.cpu_times()[:2]) - sum(own[:2])  # user + system of this process's threads
        capacity = wall * (psutil.cpu_count() or 1)
        costs.others_cpu = min(1.0, max(0.0, used - mine) / capacity) if capacity > 0 else 0.0


def _release_free_heap() -> None:
    """Return the allocator's free memory to the OS, so RSS growth measures what a sample allocates."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """The C library's `malloc_trim` (glibc), or None where it has none."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


@contextlib.contextmanager
def flop_count(enabled: bool, costs: Costs):
    """Count FLOPs of the block into `costs.flops` (deterministic, machine-independent) when enabled.

    Every pair of attention is counted, masked or not (as `torch.utils.flop_counter` counts its kernels).
    """
    if not enabled:
        yield
        return
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        yield
    costs.flops = float(counter.get_total_flops())


def _cpu_attention_formulas() -> dict:
    """Formulas `FlopCounterMode` lacks: SDPA's CPU kernel counts 0 FLOPs in torch's own table (torch <= 2.13)."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {kernel: cpu_sdpa} if kernel is not None else {}

"""Human axis ticks for report figures: token counts (`512`, `4K`, `128K`), bytes (`64 MiB`), seconds (`20 ms`).

Matplotlib's log axes label every minor tick in scientific notation (`6×10^2`), which overlaps and
reads like a script's plot. Here a log axis gets a handful of major ticks at "nice" values of its
unit (the measured lengths, powers of two for bytes, 1-2-5 steps for seconds and percentages) and no
minor labels.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

MAX_TICKS = 6
SLACK = 1.5  # how far past the data (as a factor) a tick may sit

# Unit of a stored metric -> (factor to the axis's base unit, tick family of the base unit).
UNITS = {
    "s": (1.0, "seconds"),
    "ms": (1e-3, "seconds"),
    "bytes": (1.0, "bytes"),
    "FLOP": (1.0, "flops"),
    "%": (1.0, "percent"),
}


def tokens(n: float) -> str:
    """`512`, `1K`, `1.5K`, `32K` (32,768), `100K` (100,000), `1M`: binary K/M for power-of-two sizes, else decimal."""
    n = float(n)
    for binary, decimal, suffix in ((2**20, 10**6, "M"), (2**10, 10**3, "K")):
        if n >= decimal:
            is_binary = n % binary == 0 or (n % (binary // 4) == 0 and n % decimal != 0)  # 1.5K = 1,536
            value = n / binary if is_binary else n / decimal
            return f"{value:.3g}{suffix}"
    return str(int(n)) if n.is_integer() else f"{n:.3g}"


def human_bytes(n: float) -> str:
    """`512 B`, `64 KiB`, `1.5 GiB`, `1010 MiB`: binary prefixes, three significant digits.

    1,000-1,023 of a unit stay whole numbers, where `.3g` would write `1.01e+03`.
    """
    for power, suffix in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(n) >= 1024**power:
            return _three_digits(n / 1024**power) + f" {suffix}"
    return _three_digits(n) + " B"


def _three_digits(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def seconds(x: float) -> str:
    """`50 µs`, `20 ms`, `1.5 s`, `500 s`, `20 min`."""
    if x < 1e-3:
        return f"{x * 1e6:.3g} µs"
    if x < 1.0:
        return f"{x * 1e3:.3g} ms"
    return f"{x:.3g} s" if x < 1000 else f"{x / 60:.3g} min"


def flops(x: float) -> str:
    """`100 MFLOP`, `1 GFLOP`, `2 TFLOP` (decimal prefixes)."""
    for power, prefix in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(x) >= 10**power:
            return f"{x / 10**power:.3g} {prefix}FLOP"
    return f"{x:.3g} FLOP"


def percent(x: float) -> str:
    """`0.5%`, `12.5%`, `100%`."""
    return f"{x:.3g}%"


LABELS = {"seconds": seconds, "bytes": human_bytes, "flops": flops, "percent": percent}


def _candidates(family: str, low: float, high: float) -> list[list[float]]:
    """Tick candidates covering [low, high], from finest to coarsest spacing."""
    if family == "bytes":  # powers of two: every 2x, 4x, 16x, 32x, then only KiB/MiB/GiB boundaries
        k = range(max(0, math.floor(math.log2(low)) - 1), math.ceil(math.log2(high)) + 2)
        return [[2.0**i for i in k if i % stride == 0] for stride in (1, 2, 4, 5, 10)]
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2)
    steps = [[m * 10.0**d for d in decades for m in multiples] for multiples in ((1, 2, 5), (1, 3), (1,))]
    return steps + [[10.0**d for d in decades if d % stride == 0] for stride in (2, 3, 5)]


def nice_log_ticks(values, family: str, max_ticks: int = MAX_TICKS) -> list[float]:
    """At most `max_ticks` nice ticks for positive `values` on a log axis; at least two, widening past the data."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return []
    low, high = float(values.min()), float(values.max())
    for ticks in _candidates(family, low, high):
        # A tick a little past the data still labels it (36 KiB sits next to a 32 KiB tick); the limits widen to it.
        inside = [t for t in ticks if low / SLACK <= t <= high * SLACK]
        if len(inside) <= max_ticks:
            if len(inside) >= 2:
                return inside
            # Too narrow a range for two nice ticks: take the nearest one on each side of the data instead.
            below = max([t for t in ticks if t <= low], default=low)
            above = min([t for t in ticks if t >= high and t > below], default=high)
            return sorted({below, *inside, above})
    return inside


def log_axis(ax, values, unit: str, axis: str = "y", max_ticks: int = MAX_TICKS) -> None:
    """Log scale with human tick labels for values already in the unit's base (seconds, bytes, FLOP).

    `values` should hold everything drawn on the axis (points and fitted lines): the limits are set
    to hold them and the ticks, padded by a few percent of the log range so edge markers show whole.
    """
    family = UNITS[unit][1]
    ticks = nice_log_ticks(values, family, max_ticks)
    _fixed(ax, axis, ticks, LABELS[family])
    if ticks:
        shown = np.asarray(values, dtype=float)
        shown = shown[np.isfinite(shown) & (shown > 0)]
        low, high = np.log(min(ticks[0], shown.min())), np.log(max(ticks[-1], shown.max()))
        pad = max(0.06 * (high - low), np.log(1.1))
        getattr(ax, f"set_{axis}lim")(np.exp(low - pad), np.exp(high + pad))


def length_axis(ax, lengths, axis: str = "x") -> None:
    """Log-2 scale with ticks at the measured lengths only, labelled `512`, `1K`, `32K`."""
    _fixed(ax, axis, sorted({float(n) for n in lengths if n > 0}), tokens, base=2)


def token_formatter(ax, axis: str = "x") -> None:
    """Label a linear token-count axis with `tokens` (`0`, `4K`, `8K`)."""
    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(lambda x, _: tokens(x) if x >= 0 else ""))


def _fixed(ax, axis: str, ticks: list[float], label, base: float = 10) -> None:
    getattr(ax, f"set_{axis}scale")("log", base=base)
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda x, _: label(x)))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())

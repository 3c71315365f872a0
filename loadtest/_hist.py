"""Latency histograms, the progress bar and the PNG plot shared by the scenarios.

:class:`Hist` wraps an HDR histogram (``hdrh``) that records microseconds from
1 µs to 10 minutes with three significant digits: exact enough for every
percentile reported, and small and mergeable, so load-generator processes each
keep their own and the parent adds them up (:meth:`Hist.encode` /
:meth:`Hist.decode`). Negative values (a frame that beat the HTTP answer it is
measured against) are clamped to zero and counted in ``negative``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from hdrh.histogram import HdrHistogram
from tqdm import tqdm

LOWEST_US: Final = 1
HIGHEST_US: Final = 600_000_000
DIGITS: Final = 3


class Hist:
    """An HDR histogram of durations, fed in seconds, summarised in milliseconds."""

    def __init__(self) -> None:
        self.h = HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)
        self.negative = 0

    def record_s(self, seconds: float) -> None:
        if seconds < 0:
            self.negative += 1
            seconds = 0.0
        us = min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6)))
        self.h.record_value(us)

    def extend_s(self, values: Iterable[float]) -> Hist:
        for v in values:
            self.record_s(v)
        return self

    @property
    def count(self) -> int:
        return int(self.h.get_total_count())

    def pct_ms(self, pct: float) -> float | None:
        if not self.count:
            return None
        return round(float(self.h.get_value_at_percentile(pct)) / 1000.0, 2)

    def summary(self) -> dict[str, Any]:
        """count, min, p50, p90, p99, max, mean in ms (``None`` when empty)."""
        keys = ("min", "p50", "p90", "p99", "max", "mean")
        if not self.count:
            return {"count": 0, "negative": self.negative, **dict.fromkeys(keys)}
        return {
            "count": self.count,
            "negative": self.negative,
            "min": round(self.h.get_min_value() / 1000.0, 2),
            "p50": self.pct_ms(50),
            "p90": self.pct_ms(90),
            "p99": self.pct_ms(99),
            "max": round(self.h.get_max_value() / 1000.0, 2),
            "mean": round(self.h.get_mean_value() / 1000.0, 2),
        }

    def add(self, other: Hist) -> None:
        self.h.add(other.h)
        self.negative += other.negative

    def encode(self) -> str:
        """Compressed, base64: crosses a process boundary as a short string."""
        return f"{self.negative}:{self.h.encode().decode()}"

    @classmethod
    def decode(cls, data: str) -> Hist:
        negative, _, blob = data.partition(":")
        hist = cls()
        hist.h = HdrHistogram.decode(blob.encode())
        hist.negative = int(negative)
        return hist

    def curve(self) -> tuple[list[float], list[float]]:
        """Points (percentile, ms) of the distribution, for the plot."""
        pcts = [0.0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100.0]
        return pcts, [float(self.h.get_value_at_percentile(p)) / 1000.0 for p in pcts]


def progress(total: int, desc: str) -> Any:
    """A tqdm progress bar on stderr (silent when stderr is not a terminal)."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False, mininterval=0.5)


def plot(path: Path, title: str, series: Mapping[str, Hist]) -> Path | None:
    """A PNG of each series' latency by percentile (log-scaled tail); ``None``
    when there is nothing to draw."""
    drawn = {name: h for name, h in series.items() if h.count}
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, h in drawn.items():
        pcts, values = h.curve()
        # x: 1 / (1 - p), so p50, p90, p99, p99.9 are evenly spaced.
        xs = [1.0 / max(1e-5, 1.0 - p / 100.0) for p in pcts]
        ax.plot(xs, values, marker="o", markersize=3, label=f"{name} (n={h.count})")
    ax.set_xscale("log")
    ticks = [1.0, 2.0, 10.0, 100.0, 1000.0, 10000.0]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["p0", "p50", "p90", "p99", "p99.9", "p99.99"])
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

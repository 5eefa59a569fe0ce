"""Timing helpers shared by the calibration and the benchmarks: medians after a warm-up, and
paired ratios that cancel a noisy neighbour. Imports nothing of smallbig."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()  # no collection of earlier garbage inside the timing
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_ratio(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int
) -> tuple[float, float, float]:
    """Median seconds of ``ours`` and ``theirs`` and the median of their per-pair ratios.

    The two run alternately, after a warm-up of each, so that a noisy neighbour slows both of
    a pair alike; the ratio of each pair is taken before the median.
    """
    ours(), theirs()
    pairs = []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        mid = time.perf_counter()
        theirs()
        pairs.append((mid - start, time.perf_counter() - mid))
    a, b = zip(*pairs, strict=True)
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in pairs)

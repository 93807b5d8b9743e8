"""Shared helpers of the benchmark scripts (scripts/bench_*.py import it from their own folder)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(call: Callable[[], object], repeats: int = 5, warmup: int = 1, budget_s: float = 0.0,
              max_repeats: int = 50) -> float:
    """Median wall time of ``call()`` in ms after ``warmup`` untimed runs: at least ``repeats``
    timed runs, more (up to ``max_repeats``) while the timing has taken less than ``budget_s``."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - began < budget_s and len(times) < max_repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

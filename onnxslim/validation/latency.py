"""Latency of the original and optimized models, timed round-robin with a repeat of the original.

Each round creates one session per variant, warms it up, times ``runs / rounds`` calls and
drops it before the next variant starts: one live session at a time (idle sessions' spinning
threads slow the one being timed). The repeat of the original gives the noise band; the
optimized model is flagged slower when its median exceeds the original's by more than
``max(noise band, MIN_MARGIN)``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from onnxslim.runtime.session import make_session

MIN_MARGIN = 0.05
ROUNDS = 3


@dataclasses.dataclass
class LatencyStats:
    label: str
    median_ms: float
    p90_ms: float
    runs: int


@dataclasses.dataclass
class LatencyReport:
    provider: str
    threads: int
    warmup: int
    variants: list[LatencyStats]
    noise: float
    """Relative difference between the two timings of the original model."""
    ratio: float
    """Optimized median / original median (below 1 is faster)."""
    slower: bool
    """Optimized is slower than the original beyond the noise band."""
    batch: int = 0
    """Samples per timed call (0: unknown)."""


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def measure_latency(original: bytes | str, optimized: bytes | str, inputs: dict[str, np.ndarray], *, provider: str = "cpu",
                    runs: int = 30, warmup: int = 5, threads: int | None = None) -> LatencyReport:
    threads = threads or default_threads()
    variants = {"original": original, "optimized": optimized, "original (repeat)": original}
    times = time_round_robin(variants, inputs, provider=provider, runs=runs, warmup=warmup, threads=threads)
    stats = [LatencyStats(label, float(np.median(t)), float(np.percentile(t, 90)), len(t)) for label, t in times.items()]
    base, opt, repeat = (s.median_ms for s in stats)
    noise = abs(repeat - base) / base if base else 0.0
    ratio = opt / base if base else 1.0
    batch = next((int(np.shape(v)[0]) for v in inputs.values() if np.ndim(v)), 0)
    return LatencyReport(provider, threads, warmup, stats, noise, ratio, ratio > 1.0 + max(noise, MIN_MARGIN), batch)


def time_round_robin(variants: dict[str, bytes | str], inputs: dict[str, np.ndarray], *, provider: str = "cpu",
                     runs: int = 30, warmup: int = 5, threads: int | None = None) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, ``runs`` calls each, in ``ROUNDS`` interleaved rounds."""
    threads = threads or default_threads()
    times: dict[str, list[float]] = {label: [] for label in variants}
    rounds = max(1, min(ROUNDS, runs))
    for index in range(rounds):
        count = runs // rounds + (index < runs % rounds)  # exactly ``runs`` in all (5 was 6: 2 a round)
        for label, data in variants.items():
            times[label] += _time_one(data, inputs, provider, threads, warmup, count)
    return times


def _time_one(data: bytes | str, inputs: dict[str, np.ndarray], provider: str, threads: int, warmup: int, count: int) -> list[float]:
    session = make_session(data, provider=provider, threads=threads)
    try:
        for _ in range(warmup):
            session.run(None, inputs)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            session.run(None, inputs)
            times.append((time.perf_counter() - started) * 1000.0)
        return times
    finally:
        del session

"""Timing: each call waits for its result; steps of several methods run in turns, so that a shared
machine's drifting speed affects all of them alike."""

import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# Steps each method runs before its steps are timed (the first compiles).
WARMUP_STEPS = 3


def call_seconds(run: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `run`, waiting for its result; call it once before, to compile."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return times


def fastest(run: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls of `run` (generation and evaluation: short calls)."""
    return min(call_seconds(run, repeats))


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls of `run` (training steps); call it before, to compile and warm up."""
    return statistics.median(call_seconds(run, repeats))


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a compiled float32 `[size, size] @ [size, size]` matmul: the practical peak here."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    return 2 * size**3 / median_seconds(lambda: matmul(a, a), repeats) / 1e9


def clocked(phases: dict[str, float], name: str, began: float) -> float:
    """Records the seconds since `began` as phase `name`; returns the clock now, the next phase's start."""
    now = time.perf_counter()
    phases[name] = now - began
    return now


def interleaved_steps(steps: dict[str, Callable[[int], Any]], count: int) -> dict[str, dict[str, float]]:
    """Median seconds and minor page faults per step of each of `steps`, run in turns (step i of every
    one, then step i + 1) after WARMUP_STEPS each: the machine's drifting speed then affects all alike."""
    times = {name: [] for name in steps}
    faults = dict.fromkeys(steps, 0)
    for i in range(WARMUP_STEPS + count):
        for name, step in steps.items():
            faults_before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            jax.block_until_ready(step(i))
            if i >= WARMUP_STEPS:
                times[name].append(time.perf_counter() - start)
                faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {name: {"seconds": statistics.median(times[name]), "page_faults": faults[name] / count} for name in steps}

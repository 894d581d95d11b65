"""Timing: each call waits for its result; steps of several methods run in turns of a few steps each, so
that a shared machine's drifting speed affects all of them alike."""

import math
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# Steps each method runs before its steps are timed (the first compiles).
WARMUP_STEPS = 3
# Consecutive steps of one method per turn, as a training loop runs them. A turn's first step is not timed: it
# absorbs what the method before left behind. PyTorch's OpenMP threads spin on after its step, holding the
# cores: our headline step right after one of PyTorch's took 1.36x its time right after an XLA step (docs/speed.md).
TURN_STEPS = 4


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


def calls(count: int) -> int:
    """Calls of each method that in_turns makes to keep `count` of them (a step function's index runs below it)."""
    return WARMUP_STEPS + math.ceil(count / (TURN_STEPS - 1)) * TURN_STEPS


def in_turns(runs: dict[str, Callable[[int], dict[str, float]]], count: int) -> dict[str, list[dict[str, float]]]:
    """What each of `runs` measured in `count` of its calls (call i of a method gets i): WARMUP_STEPS calls
    each, then the methods take turns of TURN_STEPS consecutive calls, the first of each turn not kept."""
    for run in runs.values():
        for i in range(WARMUP_STEPS):
            run(i)
    kept: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for first in range(WARMUP_STEPS, calls(count), TURN_STEPS):
        for name, run in runs.items():
            for i in range(first, first + TURN_STEPS):
                measured = run(i)
                if i > first and len(kept[name]) < count:
                    kept[name].append(measured)
    return kept


def interleaved_steps(steps: dict[str, Callable[[int], Any]], count: int) -> dict[str, dict[str, float]]:
    """Median seconds and minor page faults per step of each of `steps` over `count` steps, run in_turns."""

    def timed(step: Callable[[int], Any]) -> Callable[[int], dict[str, float]]:
        def run(i: int) -> dict[str, float]:
            faults_before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            jax.block_until_ready(step(i))
            seconds = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
            return {"seconds": seconds, "page_faults": faults}

        return run

    kept = in_turns({name: timed(step) for name, step in steps.items()}, count)
    return {name: {"seconds": statistics.median(m["seconds"] for m in runs),
                   "page_faults": statistics.mean(m["page_faults"] for m in runs)} for name, runs in kept.items()}

"""Shared fixtures: the tiny config with its corpus built once per session outside the repo."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import config as config_lib
from charlstm import data, train
from charlstm.ngram import KneserNey
from charlstm.reproduce import TIMINGS

REPO = Path(__file__).resolve().parents[1]

# One JAX compilation cache per test session, shared with every worker and every script the tests start
# (through the environment): the same programs (the tiny config's step, the protocols, the sampler) compile
# once instead of in every process. A cache returns the program it compiled, so results do not change.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="charlstm-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # Cache every program, however quick.
# The suite compiles hundreds of small programs and runs each briefly: XLA's backend optimisations cost
# more compile time than they save. Subprocesses inherit it; a user's own XLA_FLAGS win.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

# Float32 results are checked against float64 references: on GPUs with TF32, XLA's and cuDNN's float32
# matmuls would otherwise round to 10 bits. No effect on a CPU.
jax.config.update("jax_default_matmul_precision", "highest")

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def without_timing(metrics: list[dict]) -> list[dict]:
    """Epoch records without the fields that time the run (reproduce.TIMINGS): the only ones that differ
    between identical runs."""
    return [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics]


def in_float64(fn: Callable, *args):
    """`fn(*args)` with jax in 64-bit mode and every floating array of `args` cast to float64, as NumPy
    arrays: the exact reference that float32 results are measured against."""

    def widen(x):
        return np.asarray(x, np.float64) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    with jax.enable_x64(True):
        return jax.tree.map(np.asarray, fn(*jax.tree.map(widen, args)))


def float32_tolerance(approximate, reference, factor: float = 4.0) -> float:
    """What a float32 computation of `reference` may be off by: `factor` times the largest gap between
    `reference` and `approximate`, another float32 computation of it (a float32 reference against the
    float64 one, or the same sums in another order), at least 8 float32 ulps of the largest value.
    Reassociation errors differ by machine, thread count and kernel; their size does not."""
    approximate, reference = np.asarray(approximate, np.float64), np.asarray(reference, np.float64)
    finite = np.isfinite(reference)
    scale = float(np.abs(reference[finite]).max(initial=1.0))
    error = float(np.abs(approximate[finite] - reference[finite]).max(initial=0.0))
    return max(factor * error, 8 * FLOAT32_EPS * scale)


def assert_float32_accurate(actual, reference32, reference64, what: str, factor: float = 4.0) -> None:
    """Every array of `actual` is as close to its float64 twin in `reference64` as float32 allows
    (float32_tolerance, from the float32 `reference32`); NaN and infinities must sit where the
    reference has them. The message names the quantity, the values and the tolerance."""
    leaves = zip(*(jax.tree.leaves_with_path(t) for t in (actual, reference32, reference64)), strict=True)
    for (path, got), (_, ref32), (_, ref64) in leaves:
        name = f"{what}{jax.tree_util.keystr(path)}"
        got, ref64 = np.asarray(got, np.float64), np.asarray(ref64, np.float64)
        assert got.shape == ref64.shape, f"{name}: shape {got.shape}, reference {ref64.shape}"
        finite = np.isfinite(ref64)
        np.testing.assert_array_equal(got[~finite], ref64[~finite], err_msg=f"{name}: NaN or inf elsewhere")
        if not finite.any():
            continue
        tolerance = float32_tolerance(ref32, ref64, factor)
        error = np.where(finite, np.abs(got - ref64), 0.0)
        worst = np.unravel_index(np.argmax(error), error.shape)
        assert error[worst] <= tolerance, (
            f"{name}: off the float64 reference by {error[worst]:.3g} at {tuple(map(int, worst))} "
            f"(got {got[worst]!r}, float64 {ref64[worst]!r}); tolerance {tolerance:.3g} = {factor:g} x the "
            f"float32 reference's own error {np.abs(np.asarray(ref32, np.float64) - ref64)[finite].max():.3g}, "
            f"at least 8 ulps"
        )


def vocab_of(text: str) -> data.Vocab:
    """The vocabulary of `text`: its unique characters, sorted, as load_corpus builds it."""
    return data.Vocab("".join(sorted(set(text))))


def ngram_probabilities(model: KneserNey, context) -> np.ndarray:
    """`model`'s next-character distribution `[V]` after `context` (at least order - 1 ids), read off
    its per_char_nll one candidate character at a time."""
    context = list(context)
    nll = [model.per_char_nll(np.asarray(context + [v]), len(context))[0] for v in range(model.vocab_size)]
    return np.exp(-np.asarray(nll))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(data_dir):
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    return config


@pytest.fixture(scope="session")
def trained_run_folder(tmp_path_factory, data_dir) -> Path:
    """A run folder of configs/tiny.py trained for one epoch, once per session, for tests that only read it."""
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    config.train.epochs = 1
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train_and_evaluate(config, workdir)
    return workdir


def run_script(
    script: str, *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Runs scripts/<script> in a subprocess, as a user would, with `stdin` as its input (None: none),
    and captures its output."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes, to show that a refused command changed nothing there."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """A script's user error: exit code 2 and one `error: ...` line on stderr that has each of `words`."""
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]

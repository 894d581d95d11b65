"""The suite where the compiled CPU kernel is missing (no compiler at install time), as CI's proof: a
selection of tests that would use it, run with CHARLSTM_CPU_KERNEL=off, pass on the XLA scan instead,
and the kernel's own tests skip, each saying why."""

import os
import subprocess
import sys

import pytest

from charlstm.lstm import cpu_kernel
from tests.conftest import REPO

# Tests whose runs take the kernel when it is there: the implementation choice and the kernel's own
# tests, training end to end, the generate benchmark (its XLA reader), generation and evaluation from a
# trained run.
SELECTION = [
    "tests/test_lstm.py::test_auto_takes_the_first_that_runs_and_a_name_that_cannot_run_is_one_clear_error",
    "tests/test_lstm.py::test_charlstm_trains_on_the_same_gradients_with_every_implementation[cpu_kernel-False]",
    "tests/test_lstm.py::test_charlstm_trains_on_the_same_gradients_with_every_implementation[cpu_kernel-True]",
    "tests/test_lstm.py::test_kernel_gradients_are_the_same_bits_every_run",
    "tests/test_lstm.py::test_auto_runs_the_compiled_kernel_for_float32_on_one_cpu",
    "tests/test_train.py::test_tiny_run_writes_the_run_folder_and_resumes",
    "tests/test_benchmark.py::test_the_generate_section_times_both_methods_at_each_batch_size",
    "tests/test_trained_run.py::test_generate_continues_a_prompt_at_each_temperature",
    "tests/test_trained_run.py::test_evaluate_scores_a_text_file_and_writes_surprisal",
]


def test_the_setting_makes_the_kernel_unavailable_and_auto_take_the_xla_scan():
    """The switch the slow test below relies on, in a fresh process (the kernel loads at import)."""
    program = "import jax.numpy as jnp; from charlstm import lstm; print(lstm.select('auto', jnp.dtype('float32')))"
    env = {**os.environ, cpu_kernel.DISABLE_ENV: "off", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["xla"], result.stdout


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(cpu_kernel.DISABLE_ENV) == "off", reason="already running without the kernel")
def test_tests_that_use_the_kernel_pass_or_skip_without_it():
    env = {**os.environ, cpu_kernel.DISABLE_ENV: "off"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-n", "0", "-p", "no:cacheprovider", *SELECTION],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "SKIPPED" in result.stdout and f"{cpu_kernel.DISABLE_ENV}=off is set" in result.stdout
    assert " failed" not in result.stdout

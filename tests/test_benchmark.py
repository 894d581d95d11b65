"""scripts/benchmark.py runs every section and reports the fields README and notes quote."""

import importlib.util
import json

import pytest

from tests.conftest import run_script

REPORTED = {
    "train_step_seconds", "chars_per_second", "gflops_per_second", "peak_gflops_per_second", "peak_rss_mib",
    "eval_chars_per_second", "generate_chars_per_second", "generate_chars_per_second_lab_method",
}


def test_every_section_reports_positive_numbers():
    result = run_script(
        "benchmark.py", "--config", "configs/tiny.py", "--train_steps=2", "--repeats=1", "--length=5",
        "--lab_length=2", "--eval_chars=500", "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert REPORTED <= report.keys()
    numbers = [report[k] for k in ("train_step_seconds", "chars_per_second")]
    numbers += [*report["generate_chars_per_second"].values(), *report["generate_chars_per_second_lab_method"].values()]
    assert report["eval_chars_per_second"].keys() == {"window", "segments", "stream", "dynamic"}
    numbers += report["eval_chars_per_second"].values()
    assert all(n > 0 for n in numbers)
    assert report["train_step_seconds_xla_scan_lstm"] > 0 and report["train_step_seconds_autodiff_lstm"] > 0  # An LSTM.
    assert report["cpu_kernel"] == "loaded" and report["train_lstm_impl"] == "cpu_kernel"


def test_keras_lab_benchmark_without_tensorflow_says_where_to_run_it():
    """TensorFlow is not a charlstm dependency: the Keras lab's benchmark exits with one line saying what to do."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    result = run_script("benchmark_keras_lab.py")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "TensorFlow is not installed here: run this script from its own environment (see its docstring)"
    ]

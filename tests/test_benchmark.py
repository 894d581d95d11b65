"""scripts/benchmark.py runs every section and reports the fields README and notes quote."""

import importlib.util
import json
import statistics
import sys

import jax.numpy as jnp
import pytest

from charlstm import lstm
from tests.conftest import run_script


def benchmark_report(*args: str) -> dict:
    result = run_script(
        "benchmark.py", "--config", "configs/tiny.py", "--train_steps=2", "--repeats=1", "--length=5",
        "--lab_length=2", "--eval_chars=500", "--json", *args,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_section_reports_its_cases():
    report = benchmark_report()
    assert report["eval_chars_per_second"].keys() == {"window", "segments", "stream", "dynamic"}
    assert report["generate_chars_per_second"].keys() == {"batch_1", "batch_64"}
    assert report["generate_chars_per_second_lab_method"].keys() == {"batch_1", "batch_64"}
    assert report["chars_per_second"] == pytest.approx(16 * 20 / report["train_step_seconds"])  # tiny: batch 16 x 20.


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_train_section_times_the_configs_step_beside_every_other_implementation(dtype):
    """The timed step is training's own, in train.dtype, on the implementation training would pick; every
    other implementation that runs here in that dtype is timed beside it."""
    report = benchmark_report("--section=train", f"--config.train.dtype={dtype}")
    chosen = lstm.select("auto", jnp.dtype(dtype))
    others = {n for n, i in lstm.IMPLEMENTATIONS.items() if n != chosen and i.unavailable(jnp.dtype(dtype)) is None}
    assert (report["train_dtype"], report["train_lstm_impl"]) == (dtype, chosen)
    assert {k.removeprefix("train_step_seconds_").removesuffix("_lstm") for k in report
            if k.startswith("train_step_seconds_") and k.endswith("_lstm")} == others
    for name in others:
        assert report[f"{name}_over_default"] == pytest.approx(
            report[f"train_step_seconds_{name}_lstm"] / report["train_step_seconds"])


def test_keras_lab_benchmark_without_tensorflow_says_where_to_run_it():
    """TensorFlow is not a charlstm dependency: the Keras lab's benchmark exits with one line saying what to do."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    result = run_script("benchmark_keras_lab.py")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "TensorFlow is not installed here: run this script from its own environment (see its docstring)"
    ]


# configs/obama_lab.py's kind of model (one-hot, one LSTM layer, one target per window) in tiny shapes.
LAB_SHAPES = ("--config", "configs/obama_lab.py", "--config.data.seq_length=10", "--config.model.units=8",
              "--batch_size=4", "--train_steps=2", "--section", "train", "--json")
# What the stand-in for the Keras lab's benchmark reports, one value per call, in order.
STAND_IN_SECONDS = (0.5, 0.125, 0.25, 1.0, 2.0)


def test_keras_python_times_the_lab_in_rounds_beside_ours(tmp_path):
    """--keras_python runs the Keras lab's benchmark with that Python at our shapes, once per round, and
    each round's ratio is that round's Keras time over that round's time of ours."""
    calls = tmp_path / "calls.jsonl"
    stand_in = tmp_path / "python"
    stand_in.write_text(f"""#!{sys.executable}
import json, pathlib, sys
calls = pathlib.Path({str(calls)!r})
done = len(calls.read_text().splitlines()) if calls.exists() else 0
with calls.open("a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print(json.dumps({{"tensorflow": "9.9.9", "keras": "8.8.8", "keras_train_step_seconds": {STAND_IN_SECONDS}[done]}}))
""")
    stand_in.chmod(0o755)
    result = run_script("benchmark.py", *LAB_SHAPES, f"--keras_python={stand_in}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    arguments = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(arguments) >= 2  # Rounds, not one Keras run after ours.
    for argv in arguments:
        assert argv[0].endswith("scripts/benchmark_keras_lab.py")
        assert {"--json", "--batch_size=4", "--seq_length=10", "--units=8", "--train_steps=2"} <= set(argv)
    keras = report["keras_lab_train_step_seconds"]
    ours = report["train_step_seconds_beside_keras"]
    assert list(keras.values()) == list(STAND_IN_SECONDS[: len(arguments)])
    assert keras.keys() == ours.keys() == report["keras_lab_over_default"].keys()
    assert all(seconds > 0 for seconds in ours.values())
    ratios = {name: keras[name] / ours[name] for name in ours}
    assert report["keras_lab_over_default"] == pytest.approx(ratios)  # Same division, rounding aside.
    assert report["keras_lab_over_default_median"] == pytest.approx(statistics.median(ratios.values()))
    assert report["keras_lab_versions"] == "tensorflow 9.9.9, keras 8.8.8"


@pytest.mark.parametrize("arguments, names", [
    (("--keras_python=/nonexistent/bin/python",), "--keras_python=/nonexistent/bin/python"),
    (("--keras_python=python3", "--config.train.objective=all"), "configs/obama_lab.py"),
])
def test_keras_python_errors_are_one_line(arguments, names):
    """A --keras_python that is no executable, or a config that is not the lab's kind of model: one line, exit 2."""
    result = run_script("benchmark.py", *LAB_SHAPES, *arguments)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0]

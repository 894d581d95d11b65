"""charlstm.benchmarks: each section called with tiny settings reports its cases; scripts/benchmark.py
runs every section and reports the fields docs/speed.md quotes."""

import importlib.util
import json
import statistics
import sys

import jax.numpy as jnp
import pytest

from charlstm import lstm
from charlstm.benchmarks import Model
from charlstm.benchmarks.evaluation import eval_section
from charlstm.benchmarks.exports import export_section
from charlstm.benchmarks.generation import BATCH_SIZES, generate_section, step_weight_bytes
from charlstm.benchmarks.keras_lab import keras_lab_command
from charlstm.benchmarks.phases import PHASES, phases_section
from charlstm.benchmarks.timing import TURN_STEPS, WARMUP_STEPS, calls, in_turns, matmul_peak_gflops
from charlstm.benchmarks.torch_step import torch_device, torch_train_step
from charlstm.benchmarks.training import METHODS, methods_section, train_section
from charlstm.data import Vocab
from charlstm.errors import CharLSTMError
from tests.conftest import REPO, run_script

KERAS_LAB_SCRIPT = REPO / "scripts" / "benchmark_keras_lab.py"
# The train section's matmul peak in tiny shapes.
TINY_MATMUL = 32


@pytest.mark.slow
def test_the_script_reports_its_sections_cases():
    # The train section's cases are tested in-process below: compiling its step four ways costs most here.
    result = run_script(
        "benchmark.py", "--section", "eval", "--section", "generate", "--repeats=1", "--length=5",
        "--lab_length=2", "--eval_chars=500", "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["eval_chars_per_second"].keys() == {"window", "segments", "stream", "dynamic"}
    assert report["generate_chars_per_second"].keys() == {"batch_1", "batch_64"}
    assert report["generate_streamed_chars_per_second"].keys() == {"batch_1"}
    assert report["generate_chars_per_second_lab_method"].keys() == {"batch_1", "batch_64"}
    assert {"device", "cpu", "vector_extensions", "cpus", "jax", "length", "lab_length", "repeats", "malloc",
            "cpu_kernel", "cudnn", "torch_device"} <= report.keys()


def test_the_generate_section_times_both_methods_at_each_batch_size(tiny_config):
    report = generate_section(Model.fresh(tiny_config, 10), length=3, lab_length=2, repeats=1)
    cases = {f"batch_{batch}" for batch in BATCH_SIZES}
    assert report["generate_chars_per_second"].keys() == report["generate_chars_per_second_lab_method"].keys() == cases
    for case in cases:
        assert report["generate_speedup"][case] == pytest.approx(
            report["generate_chars_per_second"][case] / report["generate_chars_per_second_lab_method"][case])
    assert report["generate_share_of_memory_bound"] == pytest.approx(
        report["generate_chars_per_second"]["batch_1"] / report["generate_memory_bound_chars_per_second"])


@pytest.mark.parametrize("embed_dim", [0, 6])
def test_a_step_reads_every_weight_once_but_one_row_of_the_input_table(tiny_config, embed_dim):
    tiny_config.model.update(units=8, num_layers=2, embed_dim=embed_dim)
    vocab, width = 10, 4 * 8
    # One row of the table (the embedding's, then the first layer's whole input kernel; or the input kernel's).
    table = embed_dim + width * embed_dim if embed_dim else width
    layers = table + 8 * width + width + (8 * width + 8 * width + width)
    head = 8 * vocab + vocab
    assert step_weight_bytes(Model.fresh(tiny_config, vocab).params) == 4 * (layers + head)


def test_the_export_section_times_each_sampler_at_batch_1(tiny_config):
    report = export_section(tiny_config, Vocab("abcdefghij"), Model.fresh(tiny_config, 10), length=3, repeats=1)
    speeds = report["export_chars_per_second_batch_1"]
    assert speeds.keys() == {"jax", "jax_streamed", "numpy", "onnxruntime"} and all(v > 0 for v in speeds.values())


def test_the_eval_section_times_every_protocol_and_dynamic_evaluation(tiny_config):
    report = eval_section(Model.fresh(tiny_config, 10), chars=200, repeats=1)
    assert report["eval_chars_per_second"].keys() == {"window", "segments", "stream", "dynamic"}
    assert all(speed > 0 for speed in report["eval_chars_per_second"].values())


@pytest.mark.parametrize("count", [1, TURN_STEPS - 1, TURN_STEPS, 10])
def test_methods_take_turns_of_consecutive_steps_whose_first_is_not_kept(count):
    order = []

    def method(name):
        def run(i):
            order.append((name, i))
            return {"step": i}

        return run

    kept = in_turns({"a": method("a"), "b": method("b")}, count)
    timed = [entry for entry in order if entry[1] >= WARMUP_STEPS]
    turns = [timed[k : k + TURN_STEPS] for k in range(0, len(timed), TURN_STEPS)]
    # A turn is one method's consecutive steps.
    assert all(len({name for name, _ in turn}) == 1 for turn in turns)
    assert all([i for _, i in turn] == list(range(turn[0][1], turn[0][1] + TURN_STEPS)) for turn in turns)
    assert [turn[0][0] for turn in turns[:2]] == ["a", "b"]
    firsts = {turn[0][1] for turn in turns}
    for name in "ab":
        steps = [m["step"] for m in kept[name]]
        assert len(steps) == count and not firsts & set(steps) and max(i for n, i in order if n == name) < calls(count)


def test_the_matmul_peak_is_a_positive_rate():
    assert matmul_peak_gflops(TINY_MATMUL, repeats=1) > 0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_train_section_times_the_configs_step_beside_every_other_implementation(tiny_config, dtype):
    """The timed step is training's own, in train.dtype, on the implementation training would pick; every
    other implementation that runs here in that dtype is timed beside it."""
    tiny_config.train.dtype = dtype
    report = train_section(tiny_config, 2, matmul_size=TINY_MATMUL)
    chosen = lstm.select("auto", jnp.dtype(dtype))
    others = {n for n, i in lstm.IMPLEMENTATIONS.items() if n != chosen and i.unavailable(jnp.dtype(dtype)) is None}
    assert (report["train_dtype"], report["train_lstm_impl"]) == (dtype, chosen)
    assert {k.removeprefix("train_step_seconds_").removesuffix("_lstm") for k in report
            if k.startswith("train_step_seconds_") and k.endswith("_lstm")} == others
    for name in others:
        assert report[f"{name}_over_default"] == pytest.approx(
            report[f"train_step_seconds_{name}_lstm"] / report["train_step_seconds"])
    assert report["share_of_peak"] == pytest.approx(report["gflops_per_second"] / report["peak_gflops_per_second"])


def test_the_phases_section_times_each_phase_of_ours_and_torchs_split_step(tiny_config):
    """Each phase and the whole step, ours and (where torch is installed) PyTorch's, as positive medians."""
    report = phases_section(tiny_config, 2)
    sides = {"ours", "torch"} if torch_device() else {"ours"}
    for name in (*PHASES, "weight_gradient_matmul", "whole_step"):
        assert report[f"phase_{name}_seconds"].keys() == sides
        assert all(seconds > 0 for seconds in report[f"phase_{name}_seconds"].values())
    assert report["phase_lstm_impl"] == lstm.select("auto", jnp.dtype("float32"))


@pytest.mark.slow
def test_the_methods_section_times_every_method_beside_the_plain_step(tiny_config):
    report = methods_section(tiny_config, 2)
    assert report["methods_step_seconds"].keys() == METHODS.keys() == report["methods_over_plain"].keys()
    assert report["methods_over_plain"]["plain"] == 1.0
    for name, seconds in report["methods_step_seconds"].items():
        assert report["methods_over_plain"][name] == pytest.approx(seconds / report["methods_step_seconds"]["plain"])


def test_the_torch_step_trains_the_same_shapes(tiny_config):
    pytest.importorskip("torch")
    step = torch_train_step(tiny_config, 10)
    assert step is not None
    step(0)


@pytest.mark.slow
def test_keras_lab_benchmark_without_tensorflow_says_where_to_run_it():
    """TensorFlow is not a charlstm dependency: the Keras lab's benchmark exits with one line saying what to do."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    result = run_script("benchmark_keras_lab.py")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "TensorFlow is not installed here: run this script from its own environment (see its docstring)"
    ]


@pytest.fixture
def lab_config(tiny_config):
    """configs/obama_lab.py's kind of model (one-hot, one LSTM layer, one target per window) in tiny shapes."""
    tiny_config.model.update(cell="lstm", num_layers=1, embed_dim=0, units=8)
    tiny_config.train.update(objective="last", batch_size=4)
    tiny_config.data.seq_length = 10
    return tiny_config


# What the stand-in for the Keras lab's benchmark reports, one value per call, in order.
STAND_IN_SECONDS = (0.5, 0.125, 0.25, 1.0, 2.0)


@pytest.mark.slow
def test_keras_python_times_the_lab_in_rounds_beside_ours(lab_config, tmp_path):
    """The Keras lab's benchmark runs with the given Python at our shapes, once per round, and each
    round's ratio is that round's Keras time over that round's time of ours."""
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
    command = keras_lab_command(str(stand_in), KERAS_LAB_SCRIPT, lab_config, 2)
    report = train_section(lab_config, 2, command, matmul_size=TINY_MATMUL)
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


@pytest.mark.parametrize("python, objective, names", [
    ("/nonexistent/bin/python", "last", "--keras_python=/nonexistent/bin/python"),
    ("python3", "all", "configs/obama_lab.py"),
])
def test_keras_python_errors_name_the_fix(lab_config, python, objective, names):
    """A Python that is no executable, or a config that is not the lab's kind of model: a user error."""
    lab_config.train.objective = objective
    with pytest.raises(CharLSTMError, match=names):
        keras_lab_command(python, KERAS_LAB_SCRIPT, lab_config, 2)

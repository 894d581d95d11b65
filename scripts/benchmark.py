"""Measures what users wait for; each section is one function of charlstm.benchmarks, --section picks
which run (default: train, eval and generate).

    python scripts/benchmark.py --json
    python scripts/benchmark.py --section generate
    python scripts/benchmark.py --section generate --workdir runs/obama --json
    python scripts/benchmark.py --section export --workdir runs/obama
    python scripts/benchmark.py --section train --config configs/obama.py --batch_size 256
    python scripts/benchmark.py --section train --config configs/obama_lab.py --keras_python /tmp/keras-lab/bin/python
    python scripts/benchmark.py --section phases --config configs/obama_lab.py
    python scripts/benchmark.py --section methods --config configs/obama_best.py

generate (charlstm/benchmarks/generation.py): characters per second of the stateful sampler against
the lab's method on the same model, at batch 1 and 64, and streamed at batch 1. Without --workdir the model is freshly
initialised in the Obama run's shape (128 LSTM units, 45 characters, seq_length 100): speed does not
depend on the weights.

export (exports.py): characters per second at batch 1 of the run's exports (the NumPy-only sampler,
onnxruntime stepping the ONNX one-step function) beside the JAX sampler, batched and streamed; needs
onnxruntime (the [export] extra).

eval (evaluation.py): characters per second of each evaluation protocol and of dynamic evaluation, on
--eval_chars random characters (default 25,000: about the Obama validation split).

train (training.py): the real train step in --config's shapes and train.dtype (45 characters) on
random windows, its share of a 2048^3 float32 matmul's GFLOP/s, and side by side, in turns step by
step, each other LSTM implementation that runs here and, with PyTorch importable (the [bench] extra),
the same step in torch. With --keras_python (a Python with TensorFlow), the Keras lab's model trained
the lab's way (scripts/benchmark_keras_lab.py) in rounds, each right after a round of our step.

phases (phases.py): one train step in --config's shapes split at the top layer's outputs into its
phases (the layers' forward pass, the head and loss with their backward, the layers' backward pass, the
optimizer's update), each timed with the previous one finished, ours and PyTorch's in turns, beside each
whole step; and the first layer's weight-gradient matmul alone in the same shape. --train_steps of them;
the median counts.

methods (training.py): the train step in --config's shapes with each training method of docs/training.md
(embedding dropout, AR/TAR, an embedding, a tied one, the mogrifier, stateful) beside the plain step, in
turns of 4 steps, and each over the plain one.

In the header, cpu names the CPU model and vector_extensions the ones it has (figures depend on
both), cpus the cores this process may run on, cpu_kernel whether the compiled CPU kernel loaded (or
why not), kernel_loops and kernel_openblas_core the instruction set of its loops and of its OpenBLAS,
cudnn whether cuDNN runs float32 LSTM layers here (or why not), and torch_device where
PyTorch ran (null: not at all). Scripts tune glibc's malloc (charlstm.cli.keep_freed_memory);
CHARLSTM_MALLOC=default in the environment measures without that tuning.
"""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from charlstm import cli, environment, trained_run
from charlstm.benchmarks import OBAMA_VOCAB, Model
from charlstm.benchmarks.evaluation import eval_section
from charlstm.benchmarks.exports import export_section
from charlstm.benchmarks.generation import generate_section
from charlstm.benchmarks.keras_lab import keras_lab_command
from charlstm.benchmarks.phases import phases_section
from charlstm.benchmarks.torch_step import torch_device
from charlstm.benchmarks.training import methods_section, train_section
from charlstm.data import Vocab
from charlstm.lstm import cpu_kernel, cudnn

KERAS_LAB_SCRIPT = Path(__file__).with_name("benchmark_keras_lab.py")

_SECTIONS = flags.DEFINE_multi_enum(
    "section", ["train", "eval", "generate"], ["train", "eval", "generate", "export", "phases", "methods"],
    "Sections to run (default: train, eval, generate; export needs onnxruntime).",
)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run folder whose best checkpoint to use; empty: a fresh model.")
_LENGTH = flags.DEFINE_integer(
    "length", 1000, "Characters generated per call, after a seq_length prompt.", lower_bound=1
)
_LAB_LENGTH = flags.DEFINE_integer(
    "lab_length", 100, "Characters per call of the lab's method: each costs the same, so fewer suffice.", lower_bound=1
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Calls per method and batch size; the fastest counts.", lower_bound=1)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
_CONFIG = config_flags.DEFINE_config_file("config", "configs/obama.py", "Train section: config whose shapes to use.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Train section: windows per step; 0 = the config's.", lower_bound=0)
_EVAL_CHARS = flags.DEFINE_integer(
    "eval_chars", 25_000, "Eval section: characters scored (default: about the Obama validation split).", lower_bound=1
)
_TRAIN_STEPS = flags.DEFINE_integer(
    "train_steps", 20, "Train, phases and methods sections: timed steps; the median counts.", lower_bound=1
)
_KERAS_PYTHON = flags.DEFINE_string(
    "keras_python", "", "Train section: a Python with TensorFlow, to time the Keras lab's step in turns with ours."
)


def format_number(number: float) -> str:
    """Large numbers with thousands separators and one decimal, small ones (seconds, ratios) to 4 digits;
    text (e.g. versions) as it is."""
    if isinstance(number, str):
        return number
    return f"{number:,.1f}" if abs(number) >= 100 else f"{number:.4g}"


def print_results(results: dict) -> None:
    """One line per result; a dict of cases (e.g. per batch size) on one line."""
    for name, value in results.items():
        cases = value.items() if isinstance(value, dict) else [("", value)]
        print(f"{name:<38}" + "  ".join(f"{case} {format_number(number)}" for case, number in cases))


def export_inputs(workdir: str) -> tuple:
    """The config and vocabulary the export section writes: the run's, or the defaults and OBAMA_VOCAB
    letters for a fresh model."""
    if workdir:
        run = trained_run.load(workdir)
        return run.config, run.vocab
    return trained_run.default_config(), Vocab("".join(chr(ord("!") + i) for i in range(OBAMA_VOCAB)))


def main() -> None:
    workdir, length, lab_length, repeats = _WORKDIR.value, _LENGTH.value, _LAB_LENGTH.value, _REPEATS.value
    steps, keras_python, eval_chars = _TRAIN_STEPS.value, _KERAS_PYTHON.value, _EVAL_CHARS.value
    config = _CONFIG.value.copy_and_resolve_references()
    config.train.batch_size = _BATCH_SIZE.value or config.train.batch_size

    def model() -> Model:
        return Model.trained(workdir) if workdir else Model.fresh(trained_run.default_config())

    def train() -> dict:
        keras = keras_lab_command(keras_python, KERAS_LAB_SCRIPT, config, steps) if keras_python else None
        return train_section(config, steps, keras)

    sections = {
        "train": train,
        "eval": lambda: eval_section(model(), eval_chars, repeats),
        "generate": lambda: generate_section(model(), length, lab_length, repeats),
        "export": lambda: export_section(*export_inputs(workdir), model(), length, repeats),
        "phases": lambda: phases_section(config, steps),
        "methods": lambda: methods_section(config, steps),
    }
    results = {}
    for section in dict.fromkeys(_SECTIONS.value):
        results.update(sections[section]())
    machine, kernel = environment.cpu(), cpu_kernel.build_info()
    setup = {"device": str(jax.devices()[0]), "cpu": machine.get("model"), "vector_extensions": machine.get("features"),
             "cpus": len(os.sched_getaffinity(0)), "jax": jax.__version__, "length": length,
             "lab_length": lab_length, "repeats": repeats,
             "malloc": os.environ.get("CHARLSTM_MALLOC", "tuned"),
             "cpu_kernel": cpu_kernel.load_failure() or "loaded",
             **{f"kernel_{key}": kernel[key] for key in ("loops", "openblas_core") if key in kernel},
             "cudnn": cudnn.unavailable(jnp.dtype("float32")) or "available", "torch_device": torch_device()}
    if _JSON.value:
        print(json.dumps({**setup, **results}))
    else:
        print(", ".join(f"{name} {value}" for name, value in setup.items()))
        print_results(results)


if __name__ == "__main__":
    cli.run(main, "choose sections with --section")

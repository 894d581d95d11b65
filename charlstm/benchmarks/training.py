"""The real train step (charlstm.train_step.make_train_step) in a config's shapes and train.dtype on random
windows: compile seconds, median seconds per step after warm-up, characters per second, achieved
matmul GFLOP/s and its share of a float32 matmul's GFLOP/s measured in the same run, minor page faults
per step and the process's peak resident memory. Side by side, in turns (timing.in_turns): for an LSTM,
the same step with each other LSTM implementation that runs here (charlstm.lstm, by name), with
PyTorch importable the same step in torch (torch_step.py), and, given its command, the Keras lab's
step in rounds (keras_lab.py); each with its time over ours."""

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from charlstm import cli, data, lstm, model, train_step
from charlstm.benchmarks import OBAMA_VOCAB
from charlstm.benchmarks.keras_lab import keras_lab_in_turns
from charlstm.benchmarks.timing import calls, interleaved_steps, matmul_peak_gflops
from charlstm.benchmarks.torch_step import torch_train_step
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer
from charlstm.sweep import with_overrides

# Characters of the random corpus that windows are cut from.
CORPUS_CHARS = 1_000_000


def train_steps(config: ml_collections.ConfigDict, vocab_size: int, steps: int) -> Callable[[int], Any]:
    """A function running step i (below timing.calls(steps)) of charlstm.train's step in `config`'s shapes
    and dtype on random windows (speed does not depend on the data)."""
    batch, length = config.train.batch_size, config.data.seq_length
    net = create_model(config, vocab_size)
    graphdef, params = split_model(net)
    tx = make_optimizer(config.train, calls(steps))
    rng = np.random.default_rng(config.seed)
    ids = jnp.asarray(rng.integers(vocab_size, size=CORPUS_CHARS), jnp.int32)
    starts = jnp.asarray(rng.integers(CORPUS_CHARS - length, size=(calls(steps), batch)), jnp.int32)
    step = train_step.make_train_step(config, graphdef, tx)
    loop = {"state": train_step.initial_state(params, tx, net.initial_state(batch))}

    def run(i: int) -> jax.Array:
        loop["state"], loss = step(loop["state"], ids, starts[i])
        return loss

    return run


def lstm_alternatives(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
    """`config` with each other LSTM implementation that runs here in train.dtype (charlstm.lstm), by name."""
    chosen = lstm.select(config.model.lstm_impl, jnp.dtype(config.train.dtype))
    alternatives = {}
    for name, implementation in lstm.IMPLEMENTATIONS.items():
        if name != chosen and implementation.unavailable(jnp.dtype(config.train.dtype)) is None:
            alternatives[name] = config.copy_and_resolve_references()
            alternatives[name].model.lstm_impl = name
    return alternatives


def train_section(
    config: ml_collections.ConfigDict, steps: int, keras_command: list[str] | None = None, matmul_size: int = 2048
) -> dict:
    """Speed of training in `config`'s shapes over `steps` timed steps (the median counts), side by side
    with the LSTM's other implementations, PyTorch's step when installed and, with `keras_command`
    (keras_lab.keras_lab_command), the Keras lab's; the peak is a `[matmul_size]^2` matmul's."""
    peak = matmul_peak_gflops(matmul_size)
    timed = {"default": train_steps(config, OBAMA_VOCAB, steps)}
    began = time.perf_counter()
    jax.block_until_ready(timed["default"](0))  # Compiles.
    first_step_seconds = time.perf_counter() - began
    alternatives = lstm_alternatives(config) if config.model.cell == "lstm" else {}
    timed.update({name: train_steps(other, OBAMA_VOCAB, steps) for name, other in alternatives.items()})
    torch_step = torch_train_step(config, OBAMA_VOCAB)
    if torch_step is not None:
        timed["torch"] = torch_step
    measured = interleaved_steps(timed, steps)
    seconds = measured["default"]["seconds"]
    targets = data.targets_per_window(config.data.seq_length, config.train.objective)
    gflops = model.train_step_flops(config, OBAMA_VOCAB) / seconds / 1e9
    results = {
        "train_batch_size": config.train.batch_size,
        "train_dtype": config.train.dtype,
        "train_lstm_impl": lstm.select(config.model.lstm_impl, jnp.dtype(config.train.dtype))
        if config.model.cell == "lstm" else None,
        "train_compile_seconds": first_step_seconds - seconds,
        "train_step_seconds": seconds,
        "chars_per_second": config.train.batch_size * targets / seconds,
        "gflops_per_second": gflops,
        "peak_gflops_per_second": peak,
        "share_of_peak": gflops / peak,
        "train_page_faults_per_step": measured["default"]["page_faults"],
    }
    for name in alternatives:
        other = measured[name]["seconds"]
        results.update({f"train_step_seconds_{name}_lstm": other, f"{name}_over_default": other / seconds})
    if "torch" in measured:
        torch_seconds = measured["torch"]["seconds"]
        results.update(torch_train_step_seconds=torch_seconds, torch_over_jax=torch_seconds / seconds)
    if keras_command:
        results.update(keras_lab_in_turns(timed["default"], keras_command, steps))
    results["peak_rss_mib"] = cli.peak_rss_mib()
    return results


# The training methods of docs/training.md, each as fields set on the benchmarked config (the same size).
METHODS = {
    "plain": {},
    "embed_dropout": {"model.embed_dropout": 0.1},
    "activation_reg": {"train.activation_reg": 2.0, "train.temporal_activation_reg": 1.0},
    "embedding": {"model.embed_dim": 64},
    "tied_embedding": {"model.embed_dim": 64, "model.tie_weights": True},
    "mogrifier": {"model.cell": "mogrifier", "model.mogrifier_rounds": 5},
    "stateful": {"train.stateful": True},
}


def methods_section(config: ml_collections.ConfigDict, steps: int) -> dict:
    """Median seconds of the train step with each of METHODS on `config`, in turns (timing.in_turns), and each
    over the plain step: what a method costs per epoch."""
    timed = {name: train_steps(with_overrides(config, fields), OBAMA_VOCAB, steps) for name, fields in METHODS.items()}
    measured = interleaved_steps(timed, steps)
    plain = measured["plain"]["seconds"]
    return {
        "methods_step_seconds": {name: result["seconds"] for name, result in measured.items()},
        "methods_over_plain": {name: result["seconds"] / plain for name, result in measured.items()},
    }

"""Measures what users wait for; each section is one function, --section picks which run (default: all).

    python scripts/benchmark.py --json
    python scripts/benchmark.py --section generate
    python scripts/benchmark.py --section generate --workdir runs/obama --json
    python scripts/benchmark.py --section train --config configs/obama.py --batch_size 256

generate: characters per second of the stateful sampler (charlstm.sampling:
prime on a seq_length prompt once, then one cell step per character, all in
one compiled call) against the lab's method on the same model, at batch 1 and
64. The lab's method, as its generate() did it: for every new character, the
window as one-hot rows, the compiled model over all seq_length of them, the
lab's sample() on the host, the window shifted by one. Without --workdir the
model is freshly initialised in the Obama run's shape (128 LSTM units, 45
characters, seq_length 100): speed does not depend on the weights.

eval: characters per second of each evaluation protocol (charlstm.evaluate:
window, segments, stream, with the default eval settings) and of
dynamic evaluation (charlstm.protocols.dynamic, its gradient statistics included), on
--eval_chars random characters (default 25,000: about the Obama validation split).

train: the real train step (charlstm.train.make_train_step) in --config's shapes
and train.dtype (45 characters) on random windows: compile seconds, median seconds per step after warm-up,
characters per second, achieved matmul GFLOP/s and its share of a 2048^3
float32 matmul's GFLOP/s measured in the same run, minor page faults per step
and the process's peak resident memory. Side by side, in turns step by step
(so that the shared machine's drifting speed affects all alike): for an LSTM,
the same step with each other LSTM implementation that runs here (charlstm.lstm,
by name: e.g. xla and autodiff beside the CPU kernel), and with PyTorch importable
(the [bench] extra) the same step in torch on the same kind of device (nn.LSTM on
one-hot input, Linear head, Adam), each with its time over ours. In the header,
cpu_kernel says whether the compiled CPU kernel loaded (or why not), cudnn
whether cuDNN runs float32 LSTM layers here (or why not), and torch_device
where PyTorch ran (null: not at all). Scripts tune glibc's malloc
(charlstm.cli.keep_freed_memory); CHARLSTM_MALLOC=default in the environment
measures without that tuning. With --keras_python (a Python with TensorFlow), the
Keras lab's model trained the lab's way (scripts/benchmark_keras_lab.py, in a child
process) in KERAS_ROUNDS rounds, each right after a round of our step: both per round and
the Keras lab's time over ours per round, e.g.

    python scripts/benchmark.py --section train --config configs/obama_lab.py --keras_python /tmp/keras-lab/bin/python
"""

import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from ml_collections import config_flags

from charlstm import cli, data, evaluate, lstm, model, protocols, sampling, train, trained_run
from charlstm.errors import CharLSTMError
from charlstm.lstm import cpu_kernel, cudnn
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer

BATCH_SIZES = (1, 64)
# The Obama run's vocabulary size, for the freshly initialised model.
OBAMA_VOCAB = 45
# Train section: steps run before timing, and the random corpus that windows are cut from.
WARMUP_STEPS, CORPUS_CHARS = 3, 1_000_000
# Train section with --keras_python: rounds of our step, each followed by the Keras lab's.
KERAS_ROUNDS = 3

_SECTIONS = flags.DEFINE_multi_enum(
    "section", ["train", "eval", "generate"], ["train", "eval", "generate"], "Sections to run (default: all)."
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
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 20, "Train section: timed steps; the median counts.", lower_bound=1)
_KERAS_PYTHON = flags.DEFINE_string(
    "keras_python", "", "Train section: a Python with TensorFlow, to time the Keras lab's step in turns with ours."
)


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


@functools.partial(jax.jit, static_argnames="graphdef")
def last_probs(graphdef: nnx.GraphDef, params, windows: jax.Array) -> jax.Array:
    """Next-character probabilities `[batch, vocab]` from the model run over whole windows: ids
    `[batch, seq_length]`, or one-hot rows `[batch, seq_length, vocab]` as the lab fed them."""
    logits, _ = nnx.merge(graphdef, params)(windows)
    return jax.nn.softmax(logits[:, -1])


def lab_sample(probs: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """The lab's sample() on the host, for each row of `probs` `[batch, vocab]`: reweight, draw one id."""
    weights = np.exp(np.log(probs.astype(np.float64)) / temperature)
    cdf = np.cumsum(weights / weights.sum(-1, keepdims=True), axis=-1)
    return np.minimum((cdf < rng.random((len(cdf), 1))).sum(-1), cdf.shape[-1] - 1)


def lab_generate(graphdef: nnx.GraphDef, params, windows: np.ndarray, length: int, vocab_size: int) -> np.ndarray:
    """`length` ids per row of `windows` `[batch, seq_length]` by the lab's method: per character, the
    window as one-hot rows (ids for a model with an embedding), the model over all of it, the lab's
    sample() on the host, and the window shifted by the new character."""
    rng = np.random.default_rng(0)
    one_hot = None if "embed" in params else np.eye(vocab_size, dtype=np.float32)
    for _ in range(length):
        inputs = windows if one_hot is None else one_hot[windows]
        ids = lab_sample(np.asarray(last_probs(graphdef, params, inputs)), 1.0, rng)
        windows = np.concatenate([windows[:, 1:], ids[:, None].astype(windows.dtype)], axis=1)
    return windows


def benchmark_model() -> tuple[nnx.GraphDef, dict, int, int]:
    """graphdef, params, vocab size and seq_length of --workdir's best checkpoint, or of a fresh Obama-shaped model."""
    if _WORKDIR.value:
        run = trained_run.load(_WORKDIR.value)
        return run.graphdef, run.params, run.vocab.size, run.config.data.seq_length
    config = trained_run.default_config()
    return *split_model(create_model(config, OBAMA_VOCAB)), OBAMA_VOCAB, config.data.seq_length


def generate_section() -> dict:
    """Characters per second of the stateful sampler and of the lab's method, per batch size."""
    graphdef, params, vocab_size, seq_length = benchmark_model()
    prompt = jnp.arange(seq_length, dtype=jnp.int32) % vocab_size
    length = _LENGTH.value
    stateful, lab = {}, {}
    for batch in BATCH_SIZES:
        temperatures = jnp.ones(batch)
        keys = jax.random.split(jax.random.key(0), batch)
        run = functools.partial(sampling.generate_ids, graphdef, params, prompt, temperatures, keys, length)
        run()
        stateful[f"batch_{batch}"] = batch * length / fastest(run, _REPEATS.value)
        windows = np.broadcast_to(np.asarray(prompt), (batch, seq_length))
        lab_generate(graphdef, params, windows, 1, vocab_size)
        run = functools.partial(lab_generate, graphdef, params, windows, _LAB_LENGTH.value, vocab_size)
        lab[f"batch_{batch}"] = batch * _LAB_LENGTH.value / fastest(run, _REPEATS.value)
    return {
        "generate_chars_per_second": stateful,
        "generate_chars_per_second_lab_method": lab,
        "generate_speedup": {name: stateful[name] / lab[name] for name in stateful},
    }


def eval_section() -> dict:
    """Characters per second of each evaluation protocol and of dynamic evaluation, at the default settings."""
    graphdef, params, vocab_size, seq_length = benchmark_model()
    ids = np.random.default_rng(0).integers(vocab_size, size=seq_length + _EVAL_CHARS.value).astype(np.int32)
    config = trained_run.default_config()
    config.data.seq_length = seq_length
    methods = {
        protocol: functools.partial(
            evaluate.mean_nll, graphdef, params, ids, evaluate.Scoring.from_config(config, protocol, train_ids=ids)
        )
        for protocol in protocols.NAMES
    }
    speeds = {}
    for name, run in methods.items():
        run()
        speeds[name] = _EVAL_CHARS.value / fastest(run, _REPEATS.value)
    return {"eval_chars_per_second": speeds}


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls of `run` (training steps); call it before, to compile and warm up."""
    return statistics.median(call_seconds(run, repeats))


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a compiled float32 `[size, size] @ [size, size]` matmul: the practical peak here."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    return 2 * size**3 / median_seconds(lambda: matmul(a, a), repeats) / 1e9


def train_steps(config, vocab_size: int, steps: int) -> Callable[[int], Any]:
    """A function running step i (of WARMUP_STEPS + steps) of charlstm.train's step in `config`'s shapes
    and dtype on random windows (speed does not depend on the data)."""
    batch, length = config.train.batch_size, config.data.seq_length
    net = create_model(config, vocab_size)
    graphdef, params = split_model(net)
    tx = make_optimizer(config.train, WARMUP_STEPS + steps)
    rng = np.random.default_rng(config.seed)
    ids = jnp.asarray(rng.integers(vocab_size, size=CORPUS_CHARS), jnp.int32)
    starts = jnp.asarray(rng.integers(CORPUS_CHARS - length, size=(WARMUP_STEPS + steps, batch)), jnp.int32)
    step = train.make_train_step(config, graphdef, tx)
    loop = {"state": train.initial_state(params, tx, net.initial_state(batch))}

    def run(i: int) -> jax.Array:
        loop["state"], loss = step(loop["state"], ids, starts[i])
        return loss

    return run


def lstm_alternatives(config) -> dict[str, Any]:
    """`config` with each other LSTM implementation that runs here in train.dtype (charlstm.lstm), by name."""
    chosen = lstm.select(config.model.lstm_impl, jnp.dtype(config.train.dtype))
    alternatives = {}
    for name, implementation in lstm.IMPLEMENTATIONS.items():
        if name != chosen and implementation.unavailable(jnp.dtype(config.train.dtype)) is None:
            alternatives[name] = config.copy_and_resolve_references()
            alternatives[name].model.lstm_impl = name
    return alternatives


def torch_device() -> str | None:
    """Where PyTorch runs the same step as ours: 'cpu' when jax runs on the CPU, 'cuda' when jax runs on
    a GPU and torch has CUDA; None when torch is not installed or cannot run where jax does."""
    try:
        import torch
    except ImportError:
        return None
    if jax.default_backend() == "cpu":
        return "cpu"
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else None


def torch_train_step(config, vocab_size: int) -> Callable[[int], Any] | None:
    """The same step in PyTorch (one-hot or embedded input, nn.LSTM/GRU/RNN, Linear head, Adam) on the
    same kind of device as ours, or None where it cannot run (torch_device)."""
    device = torch_device()
    if device is None:
        return None
    import torch

    m, batch, length = config.model, config.train.batch_size, config.data.seq_length
    torch.manual_seed(config.seed)
    embed = torch.nn.Embedding(vocab_size, m.embed_dim) if m.embed_dim else None
    rnn_type = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[m.cell]
    rnn = rnn_type(m.embed_dim or vocab_size, m.units, m.num_layers, batch_first=True)
    head = torch.nn.Linear(m.units, vocab_size)
    modules = [module.to(device) for module in (embed, rnn, head) if module is not None]
    optimizer = torch.optim.Adam([p for module in modules for p in module.parameters()], config.train.learning_rate)
    windows = torch.randint(vocab_size, (batch, length + 1), device=device)

    def step(i: int) -> None:
        inputs = windows[:, :-1]
        x = embed(inputs) if embed else torch.nn.functional.one_hot(inputs, vocab_size).float()
        hs, _ = rnn(x)
        if config.train.objective == "all":
            logits, targets = head(hs).reshape(-1, vocab_size), windows[:, 1:].reshape(-1)
        else:
            logits, targets = head(hs[:, -1]), windows[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: the step's time includes its kernels.

    return step


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


def keras_lab_command(config) -> list[str]:
    """The command timing the Keras lab's model in `config`'s shapes with --keras_python; a user error
    when that is no executable or `config` is not the lab's kind of model (configs/obama_lab.py is)."""
    python, m = _KERAS_PYTHON.value, config.model
    if shutil.which(python) is None:
        raise CharLSTMError(f"--keras_python={python} is not an executable: give a Python that has TensorFlow")
    if (m.cell, m.num_layers, m.embed_dim, config.train.objective) != ("lstm", 1, 0, "last"):
        raise CharLSTMError("--keras_python times the lab's one-hot one-layer LSTM with one target per window: "
                            "use --config configs/obama_lab.py")
    return [python, str(Path(__file__).with_name("benchmark_keras_lab.py")), "--json",
            f"--batch_size={config.train.batch_size}", f"--seq_length={config.data.seq_length}",
            f"--units={m.units}", f"--train_steps={_TRAIN_STEPS.value}", f"--warmup_steps={WARMUP_STEPS}"]


def keras_lab_in_turns(ours: Callable[[int], Any], command: list[str]) -> dict:
    """KERAS_ROUNDS rounds of our step's median seconds (interleaved_steps), each followed by the Keras lab's
    (`command`'s report): both per round, the lab's over ours per round and the median of those ratios."""
    ours_seconds, keras_seconds = {}, {}
    for i in range(1, KERAS_ROUNDS + 1):
        ours_seconds[f"round_{i}"] = interleaved_steps({"default": ours}, _TRAIN_STEPS.value)["default"]["seconds"]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise CharLSTMError(f"{' '.join(command[:2])} failed: {(child.stderr.strip().splitlines() or ['?'])[-1]}")
        report = json.loads(child.stdout.strip().splitlines()[-1])
        keras_seconds[f"round_{i}"] = report["keras_train_step_seconds"]
    ratios = {name: keras_seconds[name] / ours_seconds[name] for name in ours_seconds}
    return {"keras_lab_versions": f"tensorflow {report['tensorflow']}, keras {report['keras']}",
            "train_step_seconds_beside_keras": ours_seconds, "keras_lab_train_step_seconds": keras_seconds,
            "keras_lab_over_default": ratios, "keras_lab_over_default_median": statistics.median(ratios.values())}


def train_section() -> dict:
    """Speed of training in --config's shapes (--batch_size overrides), side by side with the LSTM's
    other implementations and PyTorch's when installed."""
    config = _CONFIG.value.copy_and_resolve_references()
    config.train.batch_size = _BATCH_SIZE.value or config.train.batch_size
    keras_command = keras_lab_command(config) if _KERAS_PYTHON.value else None
    count = _TRAIN_STEPS.value
    peak = matmul_peak_gflops()
    steps = {"default": train_steps(config, OBAMA_VOCAB, count)}
    began = time.perf_counter()
    jax.block_until_ready(steps["default"](0))  # Compiles.
    first_step_seconds = time.perf_counter() - began
    alternatives = lstm_alternatives(config) if config.model.cell == "lstm" else {}
    steps.update({name: train_steps(other, OBAMA_VOCAB, count) for name, other in alternatives.items()})
    torch_step = torch_train_step(config, OBAMA_VOCAB)
    if torch_step is not None:
        steps["torch"] = torch_step
    measured = interleaved_steps(steps, count)
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
        results.update(keras_lab_in_turns(steps["default"], keras_command))
    results["peak_rss_mib"] = cli.peak_rss_mib()
    return results


SECTIONS = {"train": train_section, "eval": eval_section, "generate": generate_section}


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


def main() -> None:
    results = {}
    for section in dict.fromkeys(_SECTIONS.value):
        results.update(SECTIONS[section]())
    setup = {"device": str(jax.devices()[0]), "jax": jax.__version__, "length": _LENGTH.value,
             "lab_length": _LAB_LENGTH.value, "repeats": _REPEATS.value,
             "malloc": os.environ.get("CHARLSTM_MALLOC", "tuned"),
             "cpu_kernel": cpu_kernel.load_failure() or "loaded",
             "cudnn": cudnn.unavailable(jnp.dtype("float32")) or "available", "torch_device": torch_device()}
    if _JSON.value:
        print(json.dumps({**setup, **results}))
    else:
        print(", ".join(f"{name} {value}" for name, value in setup.items()))
        print_results(results)


if __name__ == "__main__":
    cli.run(main, "choose sections with --section")

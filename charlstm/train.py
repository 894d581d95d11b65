"""train_and_evaluate(config, workdir): the training loop, its jit-compiled step and the run folder.

The model is split once into a static graphdef and a pure-dict params tree;
the step is a pure function of (params, opt_state, window starts, key)
compiled with jax.jit, so no NNX object crosses the jit boundary per step.
"""

import contextlib
import functools
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from charlstm import config as config_lib
from charlstm import data, evaluate, sampling
from charlstm.checkpoints import Checkpoints
from charlstm.errors import CharLSTMError, TrainingDiverged, TrainingInterrupted
from charlstm.model import CharLSTM
from charlstm.run_folder import RunFolder, format_samples


def create_model(config: ml_collections.ConfigDict, vocab_size: int) -> CharLSTM:
    return CharLSTM(
        vocab_size, config.model.units, config.model.num_layers, rngs=nnx.Rngs(config.seed)
    )


def split_model(model: CharLSTM) -> tuple[nnx.GraphDef, dict]:
    """The static graph and the parameters as a pure dict of arrays."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


def make_optimizer(train: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Adam with the configured schedule over `total_steps`, after optional linear warm-up."""
    peak, warmup = train.learning_rate, train.warmup_steps
    if train.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return optax.adam(decay)
    ramp = optax.linear_schedule(0.0, peak, warmup)
    return optax.adam(optax.join_schedules([ramp, decay], [warmup]))


def loss_fn(graphdef: nnx.GraphDef, params, windows: jax.Array, objective: str) -> jax.Array:
    """Mean cross-entropy in nats over windows `[batch, seq_length + 1]`."""
    model = nnx.merge(graphdef, params)
    inputs = windows[:, :-1]
    if objective == "all":
        logits, _ = model(inputs)
        targets = windows[:, 1:]
    else:
        hs, _ = model.features(inputs)
        logits, targets = model.head(hs[:, -1]), windows[:, -1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@functools.partial(
    jax.jit, static_argnames=("graphdef", "tx", "seq_length", "objective"), donate_argnums=(1, 2)
)
def train_step(graphdef, params, opt_state, loss_sum, ids, starts, *, tx, seq_length, objective):
    """One optimizer step on the windows starting at `starts` `[batch]`.

    Returns params, opt_state, the epoch's running loss sum and this step's loss;
    the sum stays on device, so the loop never waits for the host.
    """
    windows = data.gather_windows(ids, starts, seq_length + 1)
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, params, windows, objective)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss_sum + loss, loss


@contextlib.contextmanager
def stop_requests():
    """Turns SIGINT and SIGTERM into a request (a dict) that the loop honours at a step boundary."""
    request = {"signal": None}
    handled = (signal.SIGINT, signal.SIGTERM)

    def handler(signum, frame):
        request["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in handled}
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def check_finite(loss: float, step: int, checkpoints: Checkpoints) -> None:
    if not math.isfinite(loss):
        best = checkpoints.best_step()
        kept = f"the best checkpoint (step {best}) is untouched" if best is not None else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged: loss is {loss} at step {step}; {kept}. "
            "Lower train.learning_rate and train again in a new --workdir"
        )


def epoch_samples(graphdef, params, corpus: data.Corpus, config, epoch: int) -> dict:
    """Text from a random validation prompt at each configured temperature, as a samples record."""
    seq_length, vocab = config.data.seq_length, corpus.vocab
    rng = np.random.default_rng([config.seed, epoch])
    start = int(rng.integers(len(corpus.val_ids) - seq_length + 1))
    prompt = corpus.val_ids[start : start + seq_length]
    temperatures = jnp.asarray(config.sample.temperatures, jnp.float32)
    keys = jnp.stack([jax.random.fold_in(jax.random.key(config.seed), epoch)] * len(temperatures))
    ids = sampling.generate_ids(
        graphdef, params, jnp.asarray(prompt), temperatures, keys, config.sample.length,
        config.sample.top_k, config.sample.top_p,
    )
    texts = [vocab.decode(row) for row in np.asarray(ids)]
    return {
        "epoch": epoch,
        "prompt": vocab.decode(prompt),
        "samples": [{"temperature": t, "text": x} for t, x in zip(config.sample.temperatures, texts)],
    }


def train_epoch(state: dict, starts: np.ndarray, train_ids, graphdef, tx, config, stop: dict, checkpoints):
    """Runs the epoch's remaining steps (from state['epoch_step']) until done or asked to stop."""
    step_fn = functools.partial(
        train_step, graphdef, tx=tx, seq_length=config.data.seq_length, objective=config.train.objective
    )
    params, opt_state, loss_sum = state["params"], state["opt_state"], state["loss_sum"]
    first, began = state["epoch_step"], time.perf_counter()
    i = first
    desc = f"epoch {state['epoch'] + 1}/{config.train.epochs}"
    with tqdm(initial=first, total=len(starts), desc=desc, unit="step", leave=False, disable=None) as bar:
        while i < len(starts) and stop["signal"] is None:
            params, opt_state, loss_sum, loss = step_fn(params, opt_state, loss_sum, train_ids, starts[i])
            i += 1
            bar.update()
            if i % config.train.log_every_steps == 0:
                check_finite(float(loss), state["step"] + i - first, checkpoints)
                bar.set_postfix(loss=f"{float(loss):.3f}")
    return {
        **state,
        "params": params,
        "opt_state": opt_state,
        "loss_sum": loss_sum,
        "step": state["step"] + i - first,
        "epoch_step": i,
        "epoch_seconds": state["epoch_seconds"] + time.perf_counter() - began,
    }


def epoch_metrics(state: dict, starts: np.ndarray, graphdef, corpus: data.Corpus, config) -> dict:
    """The metrics.jsonl record of a finished epoch."""
    val_loss = evaluate.mean_nll(
        graphdef, state["params"], corpus.val_ids, config.data.seq_length, config.eval.batch_size
    )
    targets_per_window = config.data.seq_length if config.train.objective == "all" else 1
    return {
        "epoch": state["epoch"] + 1,
        "step": state["step"],
        "train_loss": float(state["loss_sum"]) / len(starts),
        "val_loss": val_loss,
        "val_bpc": evaluate.bits_per_char(val_loss),
        "seconds": state["epoch_seconds"],
        "chars_per_second": starts.size * targets_per_window / state["epoch_seconds"],
    }


def initial_state(params, tx) -> dict:
    """Training state; `epoch` counts finished epochs, `epoch_step` steps into the next one."""
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": 0,
        "epoch": 0,
        "epoch_step": 0,
        "loss_sum": jnp.zeros((), jnp.float32),
        "epoch_seconds": 0.0,
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, command: str = "") -> list[dict]:
    """Trains (or resumes) the run in `workdir`; returns all epochs' metrics.

    `command` is recorded in run_info.jsonl so the run can be repeated.
    """
    config_lib.validate(config)
    corpus = data.load_corpus(config.data)
    vocab = corpus.vocab
    replaced = f" ({corpus.replaced} undecodable bytes replaced by U+FFFD)" if corpus.replaced else ""
    print(
        f"corpus {corpus.source}: {len(corpus.train_ids):,} train + {len(corpus.val_ids):,} "
        f"validation characters, vocabulary of {vocab.size}: {vocab.chars!r}{replaced}"
    )
    run = RunFolder(workdir)
    with run.lock(), stop_requests() as stop:
        return _train(config, corpus, run, command, stop)


def _train(config, corpus: data.Corpus, run: RunFolder, command: str, stop: dict) -> list[dict]:
    graphdef, params = split_model(create_model(config, corpus.vocab.size))
    steps = data.steps_per_epoch(
        len(corpus.train_ids), config.data.seq_length, config.train.batch_size, config.train.objective
    )
    tx = make_optimizer(config.train, steps * config.train.epochs)
    state = initial_state(params, tx)
    checkpoints = Checkpoints(run.path)
    if (latest := checkpoints.latest_step()) is not None:
        run.check_resumable(config, corpus)
        state, _ = checkpoints.restore(latest, like=state)
        run.keep_metrics_through(state["epoch"])
        print(f"resuming {run.path} at epoch {state['epoch'] + 1}, step {state['step']}")
    run.write_setup(config, corpus, command)
    if state["epoch"] >= config.train.epochs:
        print(f"already trained {state['epoch']} epochs: raise --config.train.epochs to go on")

    train_ids = jnp.asarray(corpus.train_ids)
    meta = {"vocab": corpus.vocab.chars, "config": config.to_dict()}
    while state["epoch"] < config.train.epochs:
        rng = np.random.default_rng([config.seed, state["epoch"] + 1])
        starts = data.epoch_window_starts(
            len(corpus.train_ids), config.data.seq_length, config.train.batch_size,
            config.train.objective, rng,
        )
        state = train_epoch(state, starts, train_ids, graphdef, tx, config, stop, checkpoints)
        if state["epoch_step"] < len(starts):
            if state["step"] != checkpoints.latest_step():
                checkpoints.save(state["step"], state, meta, val_loss=None)
            raise TrainingInterrupted(
                f"interrupted by signal {stop['signal']}: saved step {state['step']} "
                f"(epoch {state['epoch'] + 1}, {state['epoch_step']}/{len(starts)} steps); "
                "re-run the same command to resume",
                stop["signal"],
            )
        check_finite(float(state["loss_sum"]), state["step"], checkpoints)
        metrics = epoch_metrics(state, starts, graphdef, corpus, config)
        samples = epoch_samples(graphdef, state["params"], corpus, config, metrics["epoch"])
        print(
            f"epoch {metrics['epoch']}: train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_bpc {metrics['val_bpc']:.4f}  "
            f"{metrics['seconds']:.1f}s  {metrics['chars_per_second']:,.0f} chars/s\n"
            f"{format_samples(samples)}"
        )
        run.append_metrics(metrics)
        run.append_samples(samples)
        state = {**initial_state(state["params"], tx), "opt_state": state["opt_state"],
                 "step": state["step"], "epoch": metrics["epoch"]}
        checkpoints.save(state["step"], state, {**meta, **metrics}, metrics["val_loss"])
    return run.read_metrics()

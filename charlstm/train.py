"""train_and_evaluate(config, workdir): the training loop, its jit-compiled step and the run folder.

The model is split once into a static graphdef and a pure-dict params tree;
make_train_step compiles one optimizer step, a pure function of the state's
arrays and the window starts, with jax.jit, so no NNX object crosses the jit
boundary per step. TrainState holds what one step hands the next and a
checkpoint keeps.
"""

import contextlib
import dataclasses
import errno
import functools
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct
from tqdm import tqdm

from charlstm import averaging, data, evaluate, lstm, novelty, parallel, reports, sampling
from charlstm import config as config_lib
from charlstm.checkpoints import Checkpoints
from charlstm.errors import SaveFailed, TrainingDiverged, TrainingInterrupted
from charlstm.model import RecurrentState, create_model, split_model
from charlstm.optimizer import make_optimizer
from charlstm.run_folder import RunFolder, format_samples

# Independent random streams derived from config.seed.
DROPOUT_STREAM, SAMPLE_STREAM = 1, 2


def shardings() -> dict[str, jax.sharding.NamedSharding]:
    """Where training puts its arrays on the mesh of all devices: 'batch' (window starts, the stateful
    carry) split over the 'data' axis; 'replicated' (params, optimizer state, corpus ids) on every device."""
    mesh = parallel.make_mesh()
    return {"batch": parallel.batch_sharding(mesh), "replicated": parallel.replicated(mesh)}


def placed_model(
    config: ml_collections.ConfigDict, vocab_size: int, placement: dict
) -> tuple[nnx.GraphDef, dict, RecurrentState]:
    """A new model's graph, its params replicated and a zero LSTM state `[batch, units]` split over the batch."""
    model = create_model(config, vocab_size)
    zero_carry = parallel.put(model.initial_state(config.train.batch_size), placement["batch"])
    graphdef, params = split_model(model)
    return graphdef, parallel.put(params, placement["replicated"]), zero_carry


@struct.dataclass
class TrainState:
    """What one training step hands the next, and a checkpoint keeps: the arrays, then host counters."""

    params: dict
    opt_state: optax.OptState
    loss_sum: jax.Array  # The epoch's summed loss, kept on device so that the loop never waits for it.
    carry: RecurrentState  # The LSTM state between windows in stateful training (zeros otherwise).
    step: int = struct.field(pytree_node=False, default=0)  # Optimizer steps taken.
    epoch: int = struct.field(pytree_node=False, default=0)  # Finished epochs.
    epoch_step: int = struct.field(pytree_node=False, default=0)  # Steps into the next epoch.
    epoch_seconds: float = struct.field(pytree_node=False, default=0.0)  # That epoch's training time so far.

    def to_checkpoint(self) -> dict:
        """Every field by name: the checkpoint's format."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "TrainState":
        counters = {name: int(saved[name]) for name in ("step", "epoch", "epoch_step")}
        return cls(**{**saved, **counters, "epoch_seconds": float(saved["epoch_seconds"])})


def evaluated_params(state: TrainState):
    """The weights that are evaluated, sampled and kept as the model: the average when training keeps
    one (train.average_decay), else the params."""
    average = averaging.averaged(state.opt_state)
    return state.params if average is None else average


def in_dtype(tree, dtype: str):
    """`tree`'s floating arrays cast to `dtype` (a no-op for float32)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def loss_fn(
    graphdef: nnx.GraphDef, params, windows: jax.Array, objective: str, dropout_key, carry, dtype: str = "float32"
):
    """Mean cross-entropy in nats over windows `[batch, seq_length + 1]`, and the final state.

    `carry` is the state to start from (stateful training) or None (zeros);
    `dropout_key` None turns dropout off. `dtype` 'bfloat16' computes the model in
    bfloat16 from float32 params (mixed precision: gradients and updates stay
    float32); the loss and the returned state are float32 either way.
    """
    model = nnx.merge(graphdef, in_dtype(params, dtype))
    hs, carry = model.features(windows[:, :-1], None if carry is None else in_dtype(carry, dtype), dropout_key)
    if objective == "all":
        logits, targets = model.head(hs), windows[:, 1:].T  # Time-major, as hs.
    else:
        logits, targets = model.head(hs[-1]), windows[:, -1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets).mean()
    return loss, in_dtype(carry, "float32")


TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]


def make_train_step(
    config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, tx: optax.GradientTransformation
) -> TrainStep:
    """`step(state, ids, starts)`: one optimizer step on the windows of corpus `ids` starting at `starts`
    `[batch]`, as `config.train` asks (objective, dtype, stateful); returns the new state and the step's
    loss. Dropout draws from fold_in(key, step), so no RNG state needs saving."""
    key = jax.random.fold_in(jax.random.key(config.seed), DROPOUT_STREAM)
    seq_length, objective, dtype = config.data.seq_length, config.train.objective, config.train.dtype

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, loss_sum, carry, ids: jax.Array, starts: jax.Array, step):
        windows = data.gather_windows(ids, starts, seq_length + 1)
        grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
        (loss, carry), grads = grad_fn(
            graphdef, params, windows, objective, jax.random.fold_in(key, step), carry, dtype
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        carry = jax.lax.stop_gradient(carry)  # Truncated backpropagation through time.
        return optax.apply_updates(params, updates), opt_state, loss_sum + loss, loss, carry

    def step(state: TrainState, ids: jax.Array, starts: jax.Array) -> tuple[TrainState, jax.Array]:
        carry = state.carry if config.train.stateful else None  # Otherwise every window starts from zeros.
        params, opt_state, loss_sum, loss, final = update(
            state.params, state.opt_state, state.loss_sum, carry, ids, starts, state.step
        )
        state = state.replace(
            params=params, opt_state=opt_state, loss_sum=loss_sum, step=state.step + 1,
            epoch_step=state.epoch_step + 1, carry=final if config.train.stateful else state.carry,
        )
        return state, loss

    return step


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


def should_stop(stop: dict, epoch_step: int, every: int) -> bool:
    """Whether a stop was requested; with several processes they agree every `every` steps, so that
    a signal to any of them stops all at the same step."""
    if jax.process_count() > 1:
        if epoch_step % every:
            return False
        stop["signal"] = parallel.any_process_signal(stop["signal"])
    return stop["signal"] is not None


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
    prompt = data.random_window(corpus.val_ids, seq_length, np.random.default_rng([config.seed, epoch]))
    temperatures = list(config.sample.temperatures)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), SAMPLE_STREAM), epoch)
    keys = jnp.stack([key] * len(temperatures))
    texts = sampling.sample_texts(graphdef, params, vocab, prompt, temperatures, keys, config.sample)
    return {
        "epoch": epoch,
        "prompt": vocab.decode(prompt),
        "samples": [{"temperature": t, "text": x} for t, x in zip(config.sample.temperatures, texts)],
    }


def train_epoch(
    state: TrainState, starts: np.ndarray, train_ids: jax.Array, step: TrainStep, config, stop: dict, checkpoints
) -> TrainState:
    """Runs the epoch's remaining steps (from state.epoch_step) until done or asked to stop."""
    batch_sharding = shardings()["batch"]
    began = time.perf_counter()
    desc = f"epoch {state.epoch + 1}/{config.train.epochs}"
    with tqdm(initial=state.epoch_step, total=len(starts), desc=desc, unit="step", leave=False, disable=None) as bar:
        while state.epoch_step < len(starts) and not should_stop(stop, state.epoch_step, config.train.log_every_steps):
            state, loss = step(state, train_ids, parallel.put(starts[state.epoch_step], batch_sharding))
            bar.update()
            if state.epoch_step % config.train.log_every_steps == 0:
                check_finite(float(loss), state.step, checkpoints)
                bar.set_postfix(loss=f"{float(loss):.3f}")
    jax.block_until_ready((state.params, state.loss_sum))  # Steps run asynchronously: the time includes them all.
    return state.replace(epoch_seconds=state.epoch_seconds + time.perf_counter() - began)


def epoch_metrics(state: TrainState, starts: np.ndarray, graphdef, corpus: data.Corpus, config) -> dict:
    """The metrics.jsonl record of a finished epoch; val_loss under the per-epoch eval.protocol."""
    began = time.perf_counter()
    val_ids = evaluate.scored_ids(corpus.val_ids, config)
    val_loss = evaluate.mean_nll(graphdef, evaluated_params(state), val_ids, evaluate.Scoring.from_config(config))
    targets_per_window = data.targets_per_window(config.data.seq_length, config.train.objective)
    return {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_loss": float(state.loss_sum) / len(starts),
        "val_loss": val_loss,
        "val_bpc": evaluate.bits_per_char(val_loss),
        "val_protocol": config.eval.protocol,
        "seconds": state.epoch_seconds,
        "val_seconds": time.perf_counter() - began,
        "chars_per_second": starts.size * targets_per_window / state.epoch_seconds,
    }


def final_metrics(graphdef, params, corpus: data.Corpus, config, step: int, epoch: int) -> dict:
    """final_metrics.json: the best checkpoint's scores under each eval.final_protocols, on the
    validation split and, when there is one, the test split."""
    record = {"step": step, "epoch": epoch, **final_settings(config)}
    for split, ids in corpus.held_out().items():
        ids = evaluate.scored_ids(ids, config)
        for protocol in config.eval.final_protocols:
            began = time.perf_counter()
            loss = evaluate.mean_nll(graphdef, params, ids, evaluate.Scoring.from_config(config, protocol))
            record.setdefault(split, {})[protocol] = {
                "loss": loss, "bpc": evaluate.bits_per_char(loss), "chars": len(ids) - config.data.seq_length,
                "seconds": time.perf_counter() - began,
            }
    return record


def final_settings(config) -> dict:
    """What final_metrics.json's scores depend on besides the checkpoint."""
    return {"protocols": list(config.eval.final_protocols), "max_chars": config.eval.max_chars}


def evaluate_best(
    graphdef, state: TrainState, corpus: data.Corpus, config, run: RunFolder, checkpoints: Checkpoints, history: list
) -> None:
    """Scores the best checkpoint into final_metrics.json, unless that file already scores it with
    these settings; `state` is a training state like the checkpoint's, `history` the epochs' metrics."""
    best, done = checkpoints.best_step(), run.read_final_metrics()
    if best is None or not config.eval.final_protocols:
        return
    if done.get("step") == best and {k: done.get(k) for k in final_settings(config)} == final_settings(config):
        return
    params = evaluated_params(restore(checkpoints, best, like=state)[0])
    epoch = next((m["epoch"] for m in history if m["step"] == best), None)
    record = final_metrics(graphdef, params, corpus, config, best, epoch)
    run.write_final_metrics(record)
    print(describe_final(record))


def describe_final(record: dict) -> str:
    """final_metrics.json as lines: which checkpoint, then each split's bpc per protocol."""
    lines = [f"best checkpoint (epoch {record['epoch']}, step {record['step']}):"]
    for split in ("val", "test"):
        if split in record:
            scores = "  ".join(f"{p} {r['bpc']:.4f}" for p, r in record[split].items())
            lines.append(f"  {split}_bpc {scores}  ({next(iter(record[split].values()))['chars']:,} characters)")
    return "\n".join(lines)


def novelty_reference(corpus: data.Corpus) -> str | None:
    """The training text that each epoch's samples are searched in, or None when it is too long to search."""
    if len(corpus.train_ids) > novelty.EPOCH_MAX_TRAIN_CHARS:
        return None
    return corpus.vocab.decode(corpus.train_ids)


def initial_state(params, tx: optax.GradientTransformation, carry: RecurrentState) -> TrainState:
    """A new run's state; its arrays are placed like `params`, so a checkpoint restores onto the devices
    training uses."""
    sharding = jax.tree.leaves(params)[0].sharding
    loss_sum = parallel.put(np.zeros((), np.float32), sharding)
    return TrainState(params=params, opt_state=parallel.put(tx.init(params), sharding), loss_sum=loss_sum, carry=carry)


def restore(checkpoints: Checkpoints, step: int, like: TrainState) -> tuple[TrainState, dict]:
    """Checkpoint `step`'s state, placed like `like`, and its meta."""
    saved, meta = checkpoints.restore(step, like=like.to_checkpoint())
    return TrainState.from_checkpoint(saved), meta


def epochs_since_best(val_losses: list[float]) -> int:
    """How many epochs have passed since the lowest validation loss."""
    return len(val_losses) - 1 - int(np.argmin(val_losses))


def patience_ran_out(val_losses: list[float], patience: int) -> bool:
    """Whether early stopping ends training: `patience` (> 0) epochs without a better validation loss."""
    return 0 < patience <= epochs_since_best(val_losses)


def window_starts(corpus: data.Corpus, config, epoch: int) -> np.ndarray:
    """Window starts `[steps, batch]` of `epoch`: random windows, or streams when stateful."""
    n, length, batch = len(corpus.train_ids), config.data.seq_length, config.train.batch_size
    rng = np.random.default_rng([config.seed, epoch])
    if config.train.stateful:
        return data.stream_window_starts(n, length, batch, rng)
    return data.epoch_window_starts(n, length, batch, config.train.objective, rng)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, command: str = "") -> list[dict]:
    """Trains (or resumes) the run in `workdir` on all devices; returns all epochs' metrics.

    `command` is recorded in run_info.jsonl so the run can be repeated. With
    several processes every one calls this; only process 0 prints and writes files.
    """
    config_lib.validate(config)
    parallel.check_batch_size("train.batch_size", config.train.batch_size, parallel.make_mesh())
    implementations = lstm_implementations(config)
    with parallel.quiet_unless_primary():
        corpus = data.load_corpus(config.data)
        vocab = corpus.vocab
        replaced = f" ({corpus.replaced} undecodable bytes replaced by U+FFFD)" if corpus.replaced else ""
        print(
            f"corpus {corpus.source}: {len(corpus.train_ids):,} train + {len(corpus.val_ids):,} "
            f"validation characters, vocabulary of {vocab.size}: {vocab.chars!r}{replaced}"
        )
        run = RunFolder(workdir)
        try:
            with run.lock(), stop_requests() as stop, reports.refreshing(run.path) as epoch_ended:
                return _train(config, corpus, run, command, implementations, stop, epoch_ended)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise SaveFailed(
                f"could not write to run folder {str(run.path)!r} (no space left on device): free space, then "
                "re-run the same command to resume from its last complete checkpoint"
            ) from None


def lstm_implementations(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """The LSTM implementation each layer runs (charlstm.lstm.select) in training, in train.dtype, and in
    evaluation and sampling, in float32; empty lists for other cells. Raises CharLSTMError when the
    model.lstm_impl asked for cannot run here."""
    if config.model.cell != "lstm":
        return {"training": [], "evaluation": []}
    return {
        phase: [lstm.select(config.model.lstm_impl, jnp.dtype(dtype))] * config.model.num_layers
        for phase, dtype in (("training", config.train.dtype), ("evaluation", "float32"))
    }


def _train(
    config, corpus: data.Corpus, run: RunFolder, command: str, implementations: dict, stop: dict, epoch_ended
) -> list[dict]:
    placement = shardings()
    graphdef, params, zero_carry = placed_model(config, corpus.vocab.size, placement)
    steps = data.steps_per_epoch(
        len(corpus.train_ids), config.data.seq_length, config.train.batch_size, config.train.objective
    )
    tx = make_optimizer(config.train, steps * config.train.epochs)
    state = initial_state(params, tx, zero_carry)
    checkpoints = Checkpoints(run.path)
    run.drop_cut_lines()
    if checkpoints.latest_step() is not None:
        run.check_resumable(config, corpus)
    if restored := checkpoints.restore_newest(like=state.to_checkpoint()):
        state = TrainState.from_checkpoint(restored[0])
        run.keep_metrics_through(state.epoch)
        print(f"resuming {run.path} at epoch {state.epoch + 1}, step {state.step}")
    elif run.read_metrics():  # No checkpoint (left) to resume from: the run starts over.
        run.keep_metrics_through(0)
    run.write_setup(config, corpus, command, {"lstm": implementations})
    if state.epoch >= config.train.epochs:
        print(f"already trained {state.epoch} epochs: raise --config.train.epochs to go on")

    history = {"metrics": run.read_metrics(), "samples": run.read_samples()}
    try:
        state = _train_epochs(
            state, graphdef, tx, zero_carry, corpus, config, run, checkpoints, stop, history, epoch_ended
        )
    finally:
        checkpoints.wait()  # Saves run in the background; none is left half-written.
    evaluate_best(graphdef, state, corpus, config, run, checkpoints, history["metrics"])
    return history["metrics"]


def _train_epochs(
    state: TrainState, graphdef, tx, zero_carry, corpus, config, run, checkpoints, stop, history: dict, epoch_ended
) -> TrainState:
    """Trains the epochs left after `state`, each followed by its metrics, samples and checkpoint,
    appended to the run folder and to `history`; returns the last state. Raises TrainingInterrupted
    after saving mid-epoch when asked to stop."""
    train_ids = parallel.put(corpus.train_ids, shardings()["replicated"])
    train_text = novelty_reference(corpus)
    meta = {"vocab": corpus.vocab.chars, "config": config.to_dict()}
    step = make_train_step(config, graphdef, tx)
    while state.epoch < (config.train.stop_after_epoch or config.train.epochs):
        starts = window_starts(corpus, config, state.epoch + 1)
        state = train_epoch(state, starts, train_ids, step, config, stop, checkpoints)
        if state.epoch_step < len(starts):
            if state.step != checkpoints.latest_step():
                checkpoints.save(state.step, state.to_checkpoint(), meta, val_loss=None)
            raise TrainingInterrupted(
                f"interrupted by signal {stop['signal']}: saved step {state.step} "
                f"(epoch {state.epoch + 1}, {state.epoch_step}/{len(starts)} steps); "
                "re-run the same command to resume",
                stop["signal"],
            )
        check_finite(float(state.loss_sum), state.step, checkpoints)
        metrics = epoch_metrics(state, starts, graphdef, corpus, config)
        samples = epoch_samples(graphdef, evaluated_params(state), corpus, config, metrics["epoch"])
        metrics.update(novelty.epoch_summary([s["text"] for s in samples["samples"]], train_text))
        print(
            f"epoch {metrics['epoch']}: train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_bpc {metrics['val_bpc']:.4f} ({config.eval.protocol})  "
            f"{metrics['seconds']:.1f}s  {metrics['chars_per_second']:,.0f} chars/s  "
            f"samples: {novelty.describe_summary(metrics)}\n"
            f"{format_samples(samples)}"
        )
        run.append_metrics(metrics)
        run.append_samples(samples)
        history["metrics"].append(metrics)
        history["samples"].append(samples)
        epoch_ended(history["metrics"], history["samples"])
        if config.log.tensorboard:
            reports.log_epoch_to_tensorboard(run.path, metrics, samples)
        state = state.replace(  # The next epoch starts: its loss sum, time and (stateful) carry from zero.
            loss_sum=jnp.zeros_like(state.loss_sum), carry=zero_carry, epoch=metrics["epoch"], epoch_step=0,
            epoch_seconds=0.0,
        )
        checkpoints.save(state.step, state.to_checkpoint(), {**meta, **metrics}, metrics["val_loss"])
        if metrics["val_loss"] - metrics["train_loss"] > config.train.overfit_margin:
            print(
                f"warning: val_loss exceeds train_loss by {metrics['val_loss'] - metrics['train_loss']:.3f} "
                f"nats (> train.overfit_margin={config.train.overfit_margin}): the model is overfitting, "
                "or the validation text differs in kind from the training text"
            )
        val_losses = [m["val_loss"] for m in history["metrics"]]
        if patience_ran_out(val_losses, config.train.patience):
            print(f"early stopping: no better val_loss for {epochs_since_best(val_losses)} epochs "
                  f"(train.patience={config.train.patience})")
            break
    return state

"""The epochs of a run: Training holds what each of them needs, built once, and runs them.

An epoch trains its remaining steps, then scores the validation text, samples
at each temperature, appends both to the run's History and saves a
checkpoint. A stop request saves mid-epoch and raises TrainingInterrupted.
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from charlstm import data, evaluate, init_from, novelty, parallel, reports, sampling, stopping, train_step, trained_run
from charlstm.checkpoints import CheckpointMeta
from charlstm.errors import CharLSTMError, TrainingInterrupted
from charlstm.model import RecurrentState
from charlstm.optimizer import make_optimizer
from charlstm.run_folder import History, RunFolder, format_samples
from charlstm.train_step import TrainState


def epoch_text(n_chars: int, train: ml_collections.ConfigDict, epoch: int) -> tuple[int, int]:
    """The first id and the count of the `n_chars` training ids that `epoch` (from 1) reads: all of them, or in
    the last train.recent_epochs the latest train.recent_fraction (a corpus in date order ends with the
    addresses closest to its validation text)."""
    if epoch > train.epochs - train.recent_epochs:
        recent = int(n_chars * train.recent_fraction)
        return n_chars - recent, recent
    return 0, n_chars


def window_starts(corpus: data.Corpus, config: ml_collections.ConfigDict, epoch: int) -> np.ndarray:
    """Window starts `[steps, batch]` of `epoch` in the text it reads: random windows, or streams when stateful."""
    first, n = epoch_text(len(corpus.train_ids), config.train, epoch)
    length, batch = config.data.seq_length, config.train.batch_size
    rng = np.random.default_rng([config.seed, epoch])
    if config.train.stateful:
        return first + data.stream_window_starts(n, length, batch, rng)
    return first + data.epoch_window_starts(n, length, batch, config.train.objective, rng)


def total_steps(corpus: data.Corpus, config: ml_collections.ConfigDict) -> int:
    """The optimizer steps of all train.epochs, which the learning-rate schedule spans; refuses recent epochs
    whose text holds no step."""
    train, length = config.train, config.data.seq_length
    steps = [
        data.steps_per_epoch(epoch_text(len(corpus.train_ids), train, epoch)[1], length, train.batch_size,
                             train.objective)
        for epoch in (1, train.epochs)
    ]
    if train.recent_epochs and steps[1] <= 0:
        raise CharLSTMError(
            f"train.recent_fraction={train.recent_fraction} of the training text holds no step of "
            f"train.batch_size={train.batch_size} windows: use a larger train.recent_fraction"
        )
    return steps[0] * (train.epochs - train.recent_epochs) + steps[1] * train.recent_epochs


@dataclasses.dataclass
class Training:
    """What every epoch of a run needs: built once by Training.start, then handed the state to train."""

    config: ml_collections.ConfigDict
    corpus: data.Corpus
    run: RunFolder
    stop: stopping.StopRequest  # Set by a signal; honoured at the next step boundary.
    graphdef: nnx.GraphDef
    step: train_step.TrainStep  # The compiled optimizer step (with its optax transformation).
    train_ids: jax.Array  # The training text's ids `[n]`, on every device.
    zero_carry: RecurrentState  # What a stateful epoch starts from.
    history: History  # The finished epochs; the next ones are appended to it and to the run folder.
    started_from: dict | None = None  # A new run's start from train.init_from (init_from.record); else None.

    @classmethod
    def start(
        cls, config: ml_collections.ConfigDict, corpus: data.Corpus, run: RunFolder, stop: stopping.StopRequest,
        source: trained_run.Run | None = None,
    ) -> tuple["Training", TrainState]:
        """The context of training `config` on `corpus` in `run` (held under its lock), and the state to go on
        from: the newest checkpoint that loads, or a new model's, its weights from `source` (train.init_from,
        init_from.source_run) when given. Refuses to resume other settings or data."""
        placement = train_step.shardings()
        graphdef, params, zero_carry = train_step.placed_model(config, corpus.vocab.size, placement)
        tx = make_optimizer(config.train, total_steps(corpus, config))
        state, started_from = train_step.initial_state(params, tx, zero_carry), None
        run.drop_cut_lines()
        if run.checkpoints.latest_step() is not None:
            run.check_resumable(config, corpus)
        if restored := run.checkpoints.restore_newest(like=state.to_checkpoint()):
            state = TrainState.from_checkpoint(restored[0])
            run.keep_metrics_through(state.epoch)
            print(f"resuming {run.path} at epoch {state.epoch + 1}, step {state.step}")
        else:
            if run.read_metrics():  # No checkpoint (left) to resume from: the run starts over.
                run.keep_metrics_through(0)
            # No `source` with init_from set: the folder held checkpoints, all set aside as damaged; read it now.
            if source := source or init_from.source_run(config, run.path):
                params = init_from.transfer(source.params, source.vocab, corpus.vocab, params)
                state = train_step.initial_state(parallel.put(params, placement["replicated"]), tx, zero_carry)
                started_from = init_from.record(source, corpus.vocab)
                print(init_from.describe(started_from))
        step = train_step.make_train_step(config, graphdef, tx)
        train_ids = parallel.put(corpus.train_ids, placement["replicated"])
        training = cls(config, corpus, run, stop, graphdef, step, train_ids, zero_carry, run.history(), started_from)
        return training, state

    def run_epochs(self, state: TrainState, refresh: Callable[[], None]) -> TrainState:
        """Trains the epochs left after `state`, each ended by end_epoch, and calls `refresh` (the reports)
        after each; returns the last state. Raises TrainingInterrupted after saving mid-epoch when asked to stop."""
        while state.epoch < (self.config.train.stop_after_epoch or self.config.train.epochs):
            starts = window_starts(self.corpus, self.config, state.epoch + 1)
            state = self.train_epoch(state, starts)
            if state.epoch_step < len(starts):
                self.save_interrupted(state, len(starts))
            state = self.end_epoch(state, starts)
            refresh()
            val_losses = self.history.val_losses()
            if stopping.patience_ran_out(val_losses, self.config.train.patience):
                print(f"early stopping: no better val_loss for {stopping.epochs_since_best(val_losses)} epochs "
                      f"(train.patience={self.config.train.patience})")
                break
        return state

    def train_epoch(self, state: TrainState, starts: np.ndarray) -> TrainState:
        """Runs the epoch's remaining steps (from state.epoch_step) of `starts` `[steps, batch]` until done or
        asked to stop."""
        config, checkpoints = self.config, self.run.checkpoints
        batch_sharding = train_step.shardings()["batch"]
        began = time.perf_counter()
        desc = f"epoch {state.epoch + 1}/{config.train.epochs}"
        every = config.train.log_every_steps
        bar = tqdm(initial=state.epoch_step, total=len(starts), desc=desc, unit="step", leave=False, disable=None)
        with bar:
            while state.epoch_step < len(starts) and not stopping.should_stop(self.stop, state.epoch_step, every):
                state, loss = self.step(state, self.train_ids, parallel.put(starts[state.epoch_step], batch_sharding))
                bar.update()
                if state.epoch_step % every == 0:
                    stopping.check_finite(float(loss), state.step, checkpoints)
                    bar.set_postfix(loss=f"{float(loss):.3f}")
        jax.block_until_ready((state.params, state.loss_sum))  # Steps run asynchronously: the time includes them all.
        return state.replace(epoch_seconds=state.epoch_seconds + time.perf_counter() - began)

    def save_interrupted(self, state: TrainState, epoch_steps: int) -> None:
        """Saves `state`, stopped mid-epoch by a signal (unless it is saved already), and raises
        TrainingInterrupted saying how to resume."""
        if state.step != self.run.checkpoints.latest_step():
            self.save(state, {})
        raise TrainingInterrupted(
            f"interrupted by signal {self.stop.signal}: saved step {state.step} "
            f"(epoch {state.epoch + 1}, {state.epoch_step}/{epoch_steps} steps); "
            "re-run the same command to resume",
            self.stop.signal,
        )

    def end_epoch(self, state: TrainState, starts: np.ndarray) -> TrainState:
        """After an epoch's last step: its metrics and samples, printed and appended to the history, and a
        checkpoint of the state that starts the next epoch, which it returns."""
        stopping.check_finite(float(state.loss_sum), state.step, self.run.checkpoints)
        metrics = self.epoch_metrics(state, starts)
        samples = self.epoch_samples(state, metrics["epoch"])
        metrics.update(self.novelty_summary(samples))
        print_epoch(metrics, samples, self.config)
        self.history.append(metrics, samples)
        if self.config.log.tensorboard:
            reports.log_epoch_to_tensorboard(self.run, metrics, samples)
        state = state.replace(  # The next epoch starts: its loss sum, time and (stateful) carry from zero.
            loss_sum=jnp.zeros_like(state.loss_sum), carry=self.zero_carry, epoch=metrics["epoch"], epoch_step=0,
            epoch_seconds=0.0,
        )
        self.save(state, metrics)
        return state

    def save(self, state: TrainState, metrics: dict) -> None:
        """Checkpoints `state` with the vocabulary, the config and the finished epoch's `metrics` ({} mid-epoch)."""
        meta = CheckpointMeta(self.corpus.vocab.chars, self.config.to_dict(), metrics)
        self.run.checkpoints.save(state.step, state.to_checkpoint(), meta)

    def epoch_metrics(self, state: TrainState, starts: np.ndarray) -> dict:
        """The metrics.jsonl record of a finished epoch; val_loss under the per-epoch eval.protocol."""
        config, began = self.config, time.perf_counter()
        val_ids = evaluate.scored_ids(self.corpus.val_ids, config)
        scoring = evaluate.Scoring.from_config(config, train_ids=self.corpus.train_ids)
        val_loss = evaluate.mean_nll(self.graphdef, state.model_params(), val_ids, scoring)
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

    def epoch_samples(self, state: TrainState, epoch: int) -> dict:
        """Text from a random validation prompt at each configured temperature, as a samples record."""
        config, vocab = self.config, self.corpus.vocab
        rng = np.random.default_rng([config.seed, epoch])
        prompt = data.random_window(self.corpus.val_ids, config.data.seq_length, rng)
        temperatures = list(config.sample.temperatures)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), train_step.SAMPLE_STREAM), epoch)
        keys = jnp.stack([key] * len(temperatures))
        params = state.model_params()
        texts = sampling.sample_texts(self.graphdef, params, vocab, prompt, temperatures, keys, config.sample)
        return {
            "epoch": epoch,
            "prompt": vocab.decode(prompt),
            "samples": [{"temperature": t, "text": x} for t, x in zip(config.sample.temperatures, texts)],
        }

    def novelty_summary(self, samples: dict) -> dict:
        """How much of an epoch's samples occurs verbatim in the training text (metrics.jsonl's fields)."""
        return novelty.epoch_summary([s["text"] for s in samples["samples"]], self.train_text)

    @functools.cached_property
    def train_text(self) -> str | None:
        """The training text that each epoch's samples are searched in, or None when it is too long to search."""
        if len(self.corpus.train_ids) > novelty.EPOCH_MAX_TRAIN_CHARS:
            return None
        return self.corpus.vocab.decode(self.corpus.train_ids)


def print_epoch(metrics: dict, samples: dict, config: ml_collections.ConfigDict) -> None:
    """The epoch's line, its samples, and a warning when validation is far worse than training."""
    print(
        f"epoch {metrics['epoch']}: train_loss {metrics['train_loss']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_bpc {metrics['val_bpc']:.4f} ({config.eval.protocol})  "
        f"{metrics['seconds']:.1f}s  {metrics['chars_per_second']:,.0f} chars/s  "
        f"samples: {novelty.describe_summary(metrics)}\n"
        f"{format_samples(samples)}"
    )
    if (gap := metrics["val_loss"] - metrics["train_loss"]) > config.train.overfit_margin:
        print(
            f"warning: val_loss exceeds train_loss by {gap:.3f} nats (> train.overfit_margin="
            f"{config.train.overfit_margin}): the model is overfitting, or the validation text differs in kind "
            "from the training text"
        )

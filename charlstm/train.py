"""train_and_evaluate(config, workdir): trains (or resumes) a run, then scores its best checkpoint.

The parts: train_step.py (the state and the compiled step), stopping.py
(signals, divergence, early stopping), loop.py (the epochs, with their context
in one Training object), final_scores.py (the best checkpoint's scores) and
run_folder.py (the folder's files, checkpoints and guards).
"""

import errno
from pathlib import Path

import jax.numpy as jnp
import ml_collections

from charlstm import config as config_lib
from charlstm import data, final_scores, init_from, lstm, parallel, reports, stopping
from charlstm.errors import SaveFailed
from charlstm.loop import Training
from charlstm.run_folder import RunFolder
from charlstm.train_step import TrainState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, command: str = "") -> list[dict]:
    """Trains (or resumes) the run in `workdir` on all devices; returns all epochs' metrics.

    `command` is recorded in run_info.jsonl so the run can be repeated. With
    several processes every one calls this; only process 0 prints and writes files.
    """
    config_lib.validate(config)
    parallel.check_batch_size("train.batch_size", config.train.batch_size, parallel.make_mesh())
    implementations = lstm_implementations(config)
    source = init_from.source_run(config, workdir)  # Checked before the corpus is read.
    with parallel.quiet_unless_primary():
        corpus = data.load_corpus(config.data)
        vocab = corpus.vocab
        replaced = f" ({corpus.replaced} undecodable bytes replaced by U+FFFD)" if corpus.replaced else ""
        print(
            f"corpus {corpus.source}: {len(corpus.train_ids):,} train + {len(corpus.val_ids):,} "
            f"validation characters, vocabulary of {vocab.size}: {vocab.chars!r}{replaced}"
        )
        run = RunFolder.create(workdir)
        try:
            with run.lock(), stopping.stop_requests() as stop:
                training, state = Training.start(config, corpus, run, stop, source)
                started_from = {"init_from": training.started_from} if training.started_from else {}
                run.write_setup(config, corpus, command, {"lstm": implementations, **started_from})
                _train(training, state)
                return training.history.metrics
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise SaveFailed(
                f"could not write to run folder {str(run.path)!r} (no space left on device): free space, then "
                "re-run the same command to resume from its last complete checkpoint"
            ) from None


def _train(training: Training, state: TrainState) -> None:
    """Trains the epochs left after `state`, keeping the reports current, then scores the best checkpoint."""
    if state.epoch >= training.config.train.epochs:
        print(f"already trained {state.epoch} epochs: raise --config.train.epochs to go on")
    with reports.refreshing(training.history) as refresh:
        try:
            state = training.run_epochs(state, refresh)
        finally:
            training.run.checkpoints.wait()  # Saves run in the background; none is left half-written.
        final_scores.evaluate_best(training, state)


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

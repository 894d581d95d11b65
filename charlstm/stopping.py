"""When training stops before its last epoch: a stop signal, a loss that is not finite, no progress.

SIGINT and SIGTERM become a StopRequest that the loop honours at a step
boundary (after saving); a non-finite loss raises TrainingDiverged; early
stopping ends training after train.patience epochs without a better val_loss.
"""

import contextlib
import dataclasses
import math
import signal
from collections.abc import Iterator

import jax
import numpy as np

from charlstm import parallel
from charlstm.checkpoints import Checkpoints
from charlstm.errors import TrainingDiverged


@dataclasses.dataclass
class StopRequest:
    """The stop signal received (its number), or None while training may go on."""

    signal: int | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Turns SIGINT and SIGTERM into a StopRequest while the block runs, then restores their handlers."""
    request = StopRequest()
    handled = (signal.SIGINT, signal.SIGTERM)

    def handler(signum, frame):
        request.signal = signum

    previous = {s: signal.signal(s, handler) for s in handled}
    try:
        yield request
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def should_stop(stop: StopRequest, epoch_step: int, every: int) -> bool:
    """Whether a stop was requested; with several processes they agree every `every` steps, so that
    a signal to any of them stops all at the same step."""
    if jax.process_count() > 1:
        if epoch_step % every:
            return False
        stop.signal = parallel.any_process_signal(stop.signal)
    return stop.signal is not None


def check_finite(loss: float, step: int, checkpoints: Checkpoints) -> None:
    """Raises TrainingDiverged when `loss` (at optimizer step `step`) is NaN or infinite."""
    if not math.isfinite(loss):
        best = checkpoints.best_step()
        kept = f"the best checkpoint (step {best}) is untouched" if best is not None else "no checkpoint was written"
        raise TrainingDiverged(
            f"training diverged: loss is {loss} at step {step}; {kept}. "
            "Lower train.learning_rate and train again in a new --workdir"
        )


def epochs_since_best(val_losses: list[float]) -> int:
    """How many epochs have passed since the lowest validation loss."""
    return len(val_losses) - 1 - int(np.argmin(val_losses))


def patience_ran_out(val_losses: list[float], patience: int) -> bool:
    """Whether early stopping ends training: `patience` (> 0) epochs without a better validation loss."""
    return 0 < patience <= epochs_since_best(val_losses)

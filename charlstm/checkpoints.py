"""Orbax checkpoints of a run: the best by val_loss and the latest, kept at once.

Each checkpoint holds the training state (params, optimizer state, step,
epoch) and, as JSON, the vocab and the config, so a run folder alone is
enough to rebuild the model. No pickle: loading a run cannot run code.
"""

import contextlib
import errno
import logging as std_logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from absl import logging

from charlstm.errors import CharLSTMError, SaveFailed

_policies = ocp.checkpoint_managers


class _DropBackgroundSaveErrors(std_logging.Filter):
    """Drops the errors that Orbax's writer threads and their asyncio tasks log with tracebacks when a
    save fails: the failure reaches training as one SaveFailed, whose message says what to do."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno < std_logging.ERROR or not (
            "/orbax/" in record.pathname or record.name == "asyncio"
        )


def _quiet_background_save_errors() -> None:
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _DropBackgroundSaveErrors) for f in handler.filters):
        handler.addFilter(_DropBackgroundSaveErrors())


def _val_loss(metrics: dict) -> float:
    return metrics["val_loss"]


@contextlib.contextmanager
def _absl_errors_only(active: bool):
    """Hides absl warnings while `active`: a read-only Orbax manager warns about its own settings on every open."""
    previous = logging.get_verbosity()
    if active:
        logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(previous)


class Checkpoints:
    """The `checkpoints/` folder of a run folder; steps are global training steps."""

    def __init__(self, workdir: str | Path, read_only: bool = False):
        directory = Path(workdir).absolute() / "checkpoints"
        if read_only and not directory.is_dir():
            raise CharLSTMError(f"{str(workdir)!r} has no checkpoints/: train a run there first")
        keep = _policies.AnyPreservationPolicy(
            [
                _policies.LatestN(n=1),
                _policies.BestN(
                    get_metric_fn=_val_loss, reverse=True, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        )
        with _absl_errors_only(read_only):
            options = ocp.CheckpointManagerOptions(
                best_fn=_val_loss,
                best_mode="min",
                preservation_policy=None if read_only else keep,
                read_only=read_only,
                enable_async_checkpointing=not read_only,  # Training goes on while a save is written.
                cleanup_tmp_directories=not read_only,  # Removes what a failed or killed save left.
            )
            self.manager = ocp.CheckpointManager(directory, options=options)
        self.directory = directory
        if not read_only:
            _quiet_background_save_errors()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state: dict, meta: dict, val_loss: float | None) -> None:
        """Writes `state` (a pytree of arrays) and `meta` (JSON-able) as checkpoint `step`.

        `val_loss` None marks a mid-epoch checkpoint: kept while it is the latest,
        never counted as the best. The files are written in the background: `wait` for them.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        metrics = None if val_loss is None else {"val_loss": val_loss}
        with self._reporting_failures():  # Also a failure of the previous save, which this one waits for.
            self.manager.save(step, args=args, metrics=metrics, force=True)

    def wait(self) -> None:
        """Returns when the last save is complete on disk; SaveFailed if it failed."""
        with self._reporting_failures():
            self.manager.wait_until_finished()

    def complete_steps(self) -> list[int]:
        """The steps whose checkpoint folders are complete on disk (a save in progress has a temporary name)."""
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

    @contextlib.contextmanager
    def _reporting_failures(self):
        """Turns an error of writing a checkpoint (OSError, or tensorstore's ValueError) into one SaveFailed."""
        try:
            yield
        except (OSError, ValueError) as e:
            reason = "no space left on device" if "No space left" in str(e) or getattr(e, "errno", 0) == errno.ENOSPC \
                else str(e).splitlines()[0][:200]
            steps = self.complete_steps()
            last = f"step {steps[-1]}" if steps else "none"
            raise SaveFailed(
                f"could not write a checkpoint to {self.directory} ({reason}); the last complete checkpoint is "
                f"{last}: free space or fix the folder, then re-run the same command to resume from it"
            ) from None

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, like: dict) -> tuple[dict, dict]:
        """The state of checkpoint `step`, shaped like `like`, and its meta."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored["state"], restored["meta"]

    def restore_params(self, step: int, like: dict) -> dict:
        """Only the params of checkpoint `step`, shaped like `like` (see restore_part)."""
        return self.restore_part(step, "params", like)

    def restore_part(self, step: int, key: str, like):
        """Only `state[key]` of checkpoint `step`, shaped like `like`.

        Nothing else is read, so this needs neither the optimizer (for 'params') nor
        the fields the training state had when the run was saved.
        """
        item = {key: like}
        state = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        return self.manager.restore(step, args=ocp.args.Composite(state=state))["state"][key]

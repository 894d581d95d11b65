"""Orbax checkpoints of a run: the best by val_loss and the latest, kept at once.

Each checkpoint holds the training state (params, optimizer state, step,
epoch) and, as JSON, the vocab and the config, so a run folder alone is
enough to rebuild the model. No pickle: loading a run cannot run code.
"""

import contextlib
import dataclasses
import errno
import json
import logging as std_logging
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from absl import logging

from charlstm.errors import CharLSTMError, SaveFailed

_policies = ocp.checkpoint_managers


class _QuietLibraryLogs(std_logging.Filter):
    """Drops Orbax's log lines below ERROR unless `verbose` (e.g. 'Requested `tracked_metric`; did not
    provide metrics.' at every mid-epoch save), and always the errors that Orbax's writer threads and
    their asyncio tasks log with tracebacks when a save fails: that failure reaches training as one
    SaveFailed, whose message says what to do."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname:
            return self.verbose and record.levelno < std_logging.ERROR
        return record.levelno < std_logging.ERROR or record.name != "asyncio"


def quiet_library_logs(verbose: bool) -> None:
    """Installs the filter above on absl's handler once per process, and drops the 'Event loop is closed'
    errors that tensorstore's writes report (as unraisable) when they finish after a failed save closed
    Orbax's event loop. Scripts call it once at their start (cli.run); `verbose`: --verbosity was given."""
    handler = logging.get_absl_handler()
    if any(isinstance(f, _QuietLibraryLogs) for f in handler.filters):
        return
    handler.addFilter(_QuietLibraryLogs(verbose))
    previous = sys.unraisablehook

    def unraisablehook(unraisable) -> None:
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = unraisablehook


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The JSON saved beside a checkpoint's arrays: the vocabulary and the config that rebuild the model,
    and after a finished epoch that epoch's metrics.jsonl record (none in mid-epoch)."""

    vocab: str
    config: dict
    metrics: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The saved form: one flat object, the metrics' fields after vocab and config."""
        return {"vocab": self.vocab, "config": self.config, **self.metrics}

    @classmethod
    def from_json(cls, saved: dict) -> "CheckpointMeta":
        metrics = {k: v for k, v in saved.items() if k not in ("vocab", "config")}
        return cls(saved["vocab"], saved.get("config", {}), metrics)


def abstract(tree):
    """Shapes, dtypes and shardings of a tree's arrays: what a restore needs to know of them."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# Run-folder subfolder where training moves checkpoints that do not load, kept for inspection.
UNREADABLE = "checkpoints_unreadable"
# The small JSON files of a checkpoint folder, which Orbax reads for every step when it opens the folder.
_JSON_FILES = ("_CHECKPOINT_METADATA", "metrics/metrics", "meta/metadata")


def first_line(error: Exception) -> str:
    """`Type: the message's first line` (200 characters at most), for one-line reports."""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def unreadable_steps(directory: Path) -> dict[int, str]:
    """The steps in `directory` whose JSON files do not parse (a damaged disk, a copy cut short), with why."""
    bad = {}
    for folder in sorted(directory.iterdir()) if directory.is_dir() else []:
        for name in _JSON_FILES if folder.name.isdigit() else ():
            try:
                if (folder / name).exists():
                    json.loads((folder / name).read_text(encoding="utf-8"))
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
                bad[int(folder.name)] = f"{name}: {first_line(e)}"
                break
            except FileNotFoundError:  # Deleted meanwhile by the trainer writing the folder: not damage.
                break
    return bad


def steps_on_disk(directory: Path) -> list[int]:
    """The steps whose checkpoint folders in `directory` are complete on disk (a save in progress has a
    temporary name); [] when there is no such folder. Opens no Orbax manager."""
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


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
        self.directory = directory
        for leftover in [] if read_only or not directory.is_dir() else directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(leftover)  # What a save cut short by a full disk or a kill left; never a checkpoint.
        if bad := unreadable_steps(directory):
            if read_only:
                good = [step for step in self.complete_steps() if step not in bad]
                raise CharLSTMError(
                    f"checkpoint {', '.join(f'step {k} ({v})' for k, v in bad.items())} in {directory} does not "
                    f"load; the others (steps {good}) may: resume training there, which sets bad ones aside, "
                    f"or move them out of {directory}"
                )
            for step, reason in bad.items():
                self.set_aside(step, reason)
        keep = _policies.AnyPreservationPolicy(
            [
                _policies.LatestN(n=2),  # One older than the latest, to fall back on if it does not load.
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
            )
            self.manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state: dict, meta: CheckpointMeta) -> None:
        """Writes `state` (a pytree of arrays) and `meta` as checkpoint `step`.

        A meta without val_loss marks a mid-epoch checkpoint: kept while it is among the
        latest, never counted as the best. The files are written in the background: `wait` for them.
        """
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta.to_json()))
        metrics = {"val_loss": meta.metrics["val_loss"]} if "val_loss" in meta.metrics else None
        with self._reporting_failures():  # Also a failure of the previous save, which this one waits for.
            self.manager.save(step, args=args, metrics=metrics, force=True)

    def wait(self) -> None:
        """Returns when the last save is complete on disk; SaveFailed if it failed."""
        with self._reporting_failures():
            self.manager.wait_until_finished()

    def set_aside(self, step: int, reason: str) -> None:
        """Moves checkpoint `step`, which does not load, to the run folder's UNREADABLE/ and says so."""
        target = self.directory.parent / UNREADABLE / str(step)
        while target.exists():
            target = target.with_name(target.name + "_")
        target.parent.mkdir(exist_ok=True)
        (self.directory / str(step)).rename(target)
        print(f"warning: checkpoint step {step} does not load ({reason}): moved it to {target}", file=sys.stderr)

    def restore_newest(self, like: dict) -> tuple[dict, CheckpointMeta] | None:
        """restore() of the newest checkpoint that loads, setting aside newer ones that do not; None if none."""
        while (step := self.latest_step()) is not None:
            try:
                return self.restore(step, like)
            except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises; an older one may load.
                self.set_aside(step, first_line(e))
                self.manager.reload()
        return None

    def complete_steps(self) -> list[int]:
        return steps_on_disk(self.directory)

    @contextlib.contextmanager
    def _reporting_failures(self):
        """Turns an error of writing a checkpoint (OSError, or tensorstore's ValueError) into one SaveFailed."""
        try:
            yield
        except (OSError, ValueError) as e:
            with contextlib.suppress(Exception):  # Saves still in flight finish (or fail) before counting.
                self.manager.wait_until_finished()
            no_space = "No space left" in str(e) or getattr(e, "errno", 0) == errno.ENOSPC
            reason = "no space left on device" if no_space else first_line(e)
            steps = self.complete_steps()
            last = f"step {steps[-1]}" if steps else "none"
            raise SaveFailed(
                f"could not write a checkpoint to {self.directory} ({reason}); the last complete checkpoint is "
                f"{last}: free space or fix the folder, then re-run the same command to resume from it"
            ) from None

    def restore_meta(self, step: int) -> CheckpointMeta:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return CheckpointMeta.from_json(restored["meta"])

    def restore(self, step: int, like: dict) -> tuple[dict, CheckpointMeta]:
        """The state of checkpoint `step`, shaped and placed like `like` (arrays or their abstract()), and its meta."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract(like)), meta=ocp.args.JsonRestore())
        restored = self.manager.restore(step, args=args)
        return restored["state"], CheckpointMeta.from_json(restored["meta"])

    def restore_params(self, step: int, like: dict) -> dict:
        """Only the params of checkpoint `step`, shaped like `like` (see restore_part)."""
        return self.restore_part(step, "params", like)

    def restore_part(self, step: int, key: str, like):
        """Only `state[key]` of checkpoint `step`, shaped and placed like `like` (arrays or their abstract()).

        Nothing else is read, so this needs neither the optimizer (for 'params') nor
        the fields the training state had when the run was saved.
        """
        item = {key: abstract(like)}
        state = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        return self.manager.restore(step, args=ocp.args.Composite(state=state))["state"][key]

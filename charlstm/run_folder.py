"""A run folder and everything in it: checkpoints, config, vocab, run info, metrics, samples, lock.

RunFolder.create (training) or RunFolder.open (readers) builds one per use,
and the code that needs the folder is handed it. In a multi-process run every
process makes the same calls; only process 0 locks and writes (RunFolder.writes,
decided once), and barriers make its writes visible before anyone reads (the
folder must be on a filesystem all hosts share, as Orbax needs too).
"""

import contextlib
import functools
import json
import os
import platform
import socket
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import ml_collections

from charlstm import config as config_lib
from charlstm import environment, parallel
from charlstm.checkpoints import Checkpoints
from charlstm.data import Corpus
from charlstm.errors import CharLSTMError

CONFIG, VOCAB, FINAL_METRICS, LOCK = "config.json", "vocab.json", "final_metrics.json", ".lock"
METRICS, SAMPLES, RUN_INFO, SAMPLES_TEXT = "metrics.jsonl", "samples.jsonl", "run_info.jsonl", "samples.txt"
JSONL_FILES = (METRICS, SAMPLES, RUN_INFO)
_WARNED: set = set()  # (path, line number, line) of JSON lines already warned about.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml_collections", "numpy")
# Fields that may change when a run resumes: how long it trains, what it logs and samples, and the
# memory and end-of-training scores of evaluation (not how val_loss is measured: it picks the best).
RESUMABLE_CHANGES = (
    "train.epochs", "train.log_every_steps", "eval.batch_size", "eval.final_protocols", "sample.", "log.",
    "train.stop_after_epoch",
)


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config dict as {"section.field": value}, tuples as lists (as JSON reads them back)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """Fields, other than RESUMABLE_CHANGES, whose values differ: 'field (saved X, now Y)'."""
    saved, current = flatten(saved), flatten(current)
    return [
        f"{field} (saved {saved.get(field)!r}, now {current.get(field)!r})"
        for field in sorted(saved.keys() | current.keys())
        if saved.get(field) != current.get(field) and not field.startswith(RESUMABLE_CHANGES)
    ]


def sample_block(temperature: float, text: str, label: str = "") -> str:
    """One sample as printed and saved: a header naming its temperature (and `label`), then the text."""
    return f"--- temperature {temperature}{label}:\n{text}"


def format_samples(record: dict) -> str:
    """An epoch's samples record as text: the prompt, then one block per temperature."""
    lines = [f"--- prompt: {record['prompt']!r}"]
    lines += [sample_block(s["temperature"], s["text"]) for s in record["samples"]]
    return "\n".join(lines) + "\n"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_file(path: str | Path) -> None:
    """Raises CharLSTMError when `path`, meant to be a run folder, or a folder above it is a file: a
    message saying so beats one saying that the folder does not exist or cannot be created."""
    path = Path(path)
    if path.is_file():
        raise CharLSTMError(f"{str(path)!r} is a file, not a run folder: give the folder a run was trained in")
    if file := next((parent for parent in path.parents if parent.is_file()), None):
        raise CharLSTMError(f"run folder {str(path)!r} is inside {str(file)!r}, which is a file: give a folder")


class History:
    """A run's finished epochs, the one copy in memory: metrics.jsonl's and samples.jsonl's records, read
    when training starts; append() adds an epoch to the files and to these lists together."""

    def __init__(self, run: "RunFolder"):
        self.run = run
        self.metrics: list[dict] = run.read_metrics()
        self.samples: list[dict] = run.read_samples()

    def append(self, metrics: dict, samples: dict) -> None:
        """Appends an epoch's records; every process then reads the same metrics.jsonl."""
        self.run.write(METRICS, json.dumps(metrics) + "\n", "a")
        self.run.write(SAMPLES_TEXT, f"=== epoch {samples['epoch']}\n{format_samples(samples)}\n", "a")
        self.run.write(SAMPLES, json.dumps(samples) + "\n", "a")
        parallel.sync("run_folder.metrics")
        self.metrics.append(metrics)
        self.samples.append(samples)

    def epoch_at(self, step: int) -> int | None:
        """The epoch that ended at `step`, or None when none did (a mid-epoch checkpoint)."""
        return next((m["epoch"] for m in self.metrics if m["step"] == step), None)

    def val_losses(self) -> list[float]:
        return [m["val_loss"] for m in self.metrics]


class RunFolder:
    """A run folder on disk; the object itself touches nothing (see create and open)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        # The multi-process rule: process 0 alone writes the folder's own files and holds its lock.
        self.writes = not read_only and parallel.is_primary()

    @classmethod
    def create(cls, workdir: str | Path) -> "RunFolder":
        """The run folder to train in, created if it does not exist."""
        try:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            refuse_file(workdir)
            raise CharLSTMError(
                f"cannot create run folder {str(workdir)!r}: {e.strerror}: give a --workdir you can write to"
            ) from None
        return cls(workdir)

    @classmethod
    def open(cls, workdir: str | Path) -> "RunFolder":
        """An existing run folder, to read while a trainer may be writing it."""
        if not Path(workdir).is_dir():
            refuse_file(workdir)
            raise CharLSTMError(
                f"run folder {str(workdir)!r} does not exist: train one with scripts/train.py --workdir {workdir}"
            )
        return cls(workdir, read_only=True)

    @functools.cached_property
    def checkpoints(self) -> Checkpoints:
        """The folder's checkpoints, opened on first use (training: under the lock, as it sets damaged ones aside)."""
        return Checkpoints(self.path, read_only=self.read_only)

    def write(self, name: str, text: str, mode: str = "w") -> None:
        """Replaces the file `name` with `text` at once, so no reader sees half of it (mode 'w'), or appends
        `text` to it ('a'); does nothing in a process that does not write (RunFolder.writes)."""
        if not self.writes:
            return
        path = self.path / name
        target, path = (path, path.with_name(f".{name}.tmp")) if mode == "w" else (None, path)
        with open(path, mode) as f:
            f.write(text)
        if target:
            os.replace(path, target)

    @contextlib.contextmanager
    def lock(self):
        """Holds LOCK while training (process 0 only); refuses a live holder, clears a dead one's."""
        if not self.writes:
            yield
            return
        path = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                try:
                    holder = json.loads(path.read_text())
                except (OSError, ValueError):
                    holder = {"pid": -1, "host": me["host"]}  # Half-written: its writer died.
                if holder["host"] != me["host"] or _process_alive(holder["pid"]):
                    raise CharLSTMError(
                        f"run folder {str(self.path)!r} is in use by process {holder['pid']} on "
                        f"{holder['host']}: wait for it to finish or use another --workdir"
                    ) from None
                print(f"cleared a stale lock of process {holder['pid']}, which is no longer running")
                path.unlink(missing_ok=True)
        else:
            raise CharLSTMError(f"could not lock {str(path)!r}: another process keeps taking it")
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def read_config(self) -> dict | None:
        """config.json as saved (fields added since then missing), or None before training wrote it."""
        path = self.path / CONFIG
        return json.loads(path.read_text()) if path.is_file() else None

    def check_resumable(self, config: ml_collections.ConfigDict, corpus: Corpus) -> None:
        """Refuses to resume with other data, model or optimizer settings, or another corpus."""
        if (saved := self.read_config()) is not None:
            saved = config_lib.with_defaults(saved).to_dict()
            if differences := config_differences(saved, config.to_dict()):
                raise CharLSTMError(
                    f"run folder {str(self.path)!r} was trained with other settings: "
                    f"{'; '.join(differences)}: pass the saved values or use a new --workdir"
                )
        self.check_corpus(corpus)

    def check_corpus(self, corpus: Corpus) -> None:
        """Refuses a corpus that changed since the run started: its file's SHA-256, or the vocabulary it
        gives, differs from what the run recorded."""
        info, vocab = self.read_run_info(), self.path / VOCAB
        if info and (recorded := info[0]["corpus"]["sha256"]) != corpus.sha256:
            why = f"its SHA-256 is {corpus.sha256}, the run recorded {recorded}"
        elif vocab.is_file() and json.loads(vocab.read_text())["chars"] != corpus.vocab.chars:
            why = "its characters differ"
        else:
            return
        raise CharLSTMError(
            f"the corpus {corpus.source!r} changed since run folder {str(self.path)!r} was trained ({why}): "
            "restore the file it was trained on, or use a new --workdir"
        )

    def write_setup(self, config: ml_collections.ConfigDict, corpus: Corpus, command: str, extra: dict) -> None:
        """Writes config.json and vocab.json, and appends this start to run_info.jsonl with `extra`'s fields
        (e.g. the LSTM implementation each layer runs)."""
        parallel.sync("run_folder.setup")  # Every process has read the old setup (check_resumable).
        self.write(CONFIG, config_lib.to_json(config))
        self.write(VOCAB, corpus.vocab.to_json() + "\n")
        info = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
            "corpus": {"path": corpus.source, "sha256": corpus.sha256, "bytes": corpus.n_bytes},
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": {name: metadata.version(name) for name in PACKAGES},
            "devices": [str(device) for device in jax.devices()],
            "processes": jax.process_count(),
            **environment.record(),  # CPU, threads, the CPU kernel's build, variables, commit.
            **extra,
        }
        self.write(RUN_INFO, json.dumps(info) + "\n", "a")

    def read_run_info(self) -> list[dict]:
        return self._read_jsonl(RUN_INFO)

    def read_metrics(self) -> list[dict]:
        return self._read_jsonl(METRICS)

    def read_samples(self) -> list[dict]:
        return self._read_jsonl(SAMPLES)

    def history(self) -> History:
        """The finished epochs' records, to append the next ones to."""
        return History(self)

    def keep_metrics_through(self, epoch: int) -> None:
        """Drops metric lines of epochs after `epoch` (written just before a crash lost them)."""
        kept = [m for m in self.read_metrics() if m["epoch"] <= epoch]
        self.write(METRICS, "".join(json.dumps(m) + "\n" for m in kept))

    def read_final_metrics(self) -> dict:
        """final_metrics.json: the best checkpoint's scores when training ended; {} before."""
        path = self.path / FINAL_METRICS
        return json.loads(path.read_text()) if path.exists() else {}

    def write_final_metrics(self, record: dict) -> None:
        self.write(FINAL_METRICS, json.dumps(record, indent=2) + "\n")

    def _read_jsonl(self, name: str) -> list[dict]:
        """The records of a JSON-lines file; a line that is not JSON (cut off by a crash mid-write) is
        skipped with a warning, once per line."""
        path = self.path / name
        records = []
        for number, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if (path, number, line) not in _WARNED:
                    _WARNED.add((path, number, line))
                    print(
                        f"warning: skipped line {number} of {path}: not JSON (cut off when a run stopped)",
                        file=sys.stderr,
                    )
        return records

    def drop_cut_lines(self) -> None:
        """Removes a last line left without its newline (a write cut off by a crash) from each JSON-lines
        file, so the next record appended starts on a line of its own."""
        for name in JSONL_FILES if self.writes else ():
            path = self.path / name
            if path.exists() and (text := path.read_text()) and not text.endswith("\n"):
                kept = text[: text.rfind("\n") + 1]
                print(f"warning: dropped a cut-off last line of {path}: {text[len(kept):][:60]!r}", file=sys.stderr)
                self.write(name, kept)

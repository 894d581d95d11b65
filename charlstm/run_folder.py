"""The files of a run folder besides checkpoints: config, vocab, run info, metrics, samples, lock.

In a multi-process run every process makes the same calls; only process 0
locks and writes, and barriers make its writes visible before anyone reads
(the folder must be on a filesystem all hosts share, as Orbax needs too).
"""

import contextlib
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
from charlstm.data import Corpus
from charlstm.errors import CharLSTMError

FINAL_METRICS = "final_metrics.json"
JSONL_FILES = ("metrics.jsonl", "samples.jsonl", "run_info.jsonl")
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


class RunFolder:
    """A run folder on disk; creating the object creates the folder."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            refuse_file(self.path)
            raise CharLSTMError(
                f"cannot create run folder {str(self.path)!r}: {e.strerror}: give a --workdir you can write to"
            ) from None

    @contextlib.contextmanager
    def lock(self):
        """Holds `.lock` while training (process 0 only); refuses a live holder, clears a dead one's."""
        if not parallel.is_primary():
            yield
            return
        path = self.path / ".lock"
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

    def check_resumable(self, config: ml_collections.ConfigDict, corpus: Corpus) -> None:
        """Refuses to resume with other data, model or optimizer settings, or another corpus."""
        config_path = self.path / "config.json"
        if config_path.exists():
            saved = config_lib.with_defaults(json.loads(config_path.read_text())).to_dict()
            if differences := config_differences(saved, config.to_dict()):
                raise CharLSTMError(
                    f"run folder {str(self.path)!r} was trained with other settings: "
                    f"{'; '.join(differences)}: pass the saved values or use a new --workdir"
                )
        self.check_corpus(corpus)

    def check_corpus(self, corpus: Corpus) -> None:
        """Refuses a corpus whose file changed since the run started (its SHA-256 differs)."""
        info = self.read_run_info()
        if info and info[0]["corpus"]["sha256"] != corpus.sha256:
            raise CharLSTMError(
                f"the corpus {corpus.source!r} changed since run folder {str(self.path)!r} was trained "
                "(SHA-256 differs): restore the file it was trained on, or use a new --workdir"
            )

    def write_setup(self, config: ml_collections.ConfigDict, corpus: Corpus, command: str, extra: dict) -> None:
        """Writes config.json and vocab.json, and appends this start to run_info.jsonl with `extra`'s fields
        (e.g. the LSTM implementation each layer runs)."""
        parallel.sync("run_folder.setup")  # Every process has read the old setup (check_resumable).
        if not parallel.is_primary():
            return
        (self.path / "config.json").write_text(config_lib.to_json(config))
        (self.path / "vocab.json").write_text(corpus.vocab.to_json() + "\n")
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
        self._append("run_info.jsonl", info)

    def read_run_info(self) -> list[dict]:
        return self._read_jsonl("run_info.jsonl")

    def read_metrics(self) -> list[dict]:
        return self._read_jsonl("metrics.jsonl")

    def keep_metrics_through(self, epoch: int) -> None:
        """Drops metric lines of epochs after `epoch` (written just before a crash lost them)."""
        kept = [m for m in self.read_metrics() if m["epoch"] <= epoch]
        if parallel.is_primary():
            (self.path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, metrics: dict) -> None:
        """Appends an epoch's record; every process then reads the same metrics.jsonl."""
        self._append("metrics.jsonl", metrics)
        parallel.sync("run_folder.metrics")

    def append_samples(self, record: dict) -> None:
        """Appends an epoch's samples to samples.txt (to read) and samples.jsonl (to process)."""
        if not parallel.is_primary():
            return
        with open(self.path / "samples.txt", "a") as f:
            f.write(f"=== epoch {record['epoch']}\n{format_samples(record)}\n")
        self._append("samples.jsonl", record)

    def read_final_metrics(self) -> dict:
        """final_metrics.json: the best checkpoint's scores when training ended; {} before."""
        path = self.path / FINAL_METRICS
        return json.loads(path.read_text()) if path.exists() else {}

    def write_final_metrics(self, record: dict) -> None:
        """Replaces final_metrics.json at once, so no reader sees half of it."""
        if parallel.is_primary():
            tmp = self.path / f".{FINAL_METRICS}.tmp"
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(tmp, self.path / FINAL_METRICS)

    def read_samples(self) -> list[dict]:
        return self._read_jsonl("samples.jsonl")

    def _append(self, name: str, record: dict) -> None:
        if not parallel.is_primary():
            return
        with open(self.path / name, "a") as f:
            f.write(json.dumps(record) + "\n")

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
        if not parallel.is_primary():
            return
        for name in JSONL_FILES:
            path = self.path / name
            if path.exists() and (text := path.read_text()) and not text.endswith("\n"):
                kept = text[: text.rfind("\n") + 1]
                print(f"warning: dropped a cut-off last line of {path}: {text[len(kept):][:60]!r}", file=sys.stderr)
                path.write_text(kept)

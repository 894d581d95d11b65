"""What people look at: curves.png, samples.md, leaderboards of several runs, TensorBoard events.

Everything is rendered from a run folder's metrics.jsonl, samples.jsonl and
config.json and keeps no state of its own, so a resumed run, a sweep and
scripts/compare.py all draw the same pictures from the same files.
"""

import contextlib
import csv
import io
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from charlstm import protocols
from charlstm.errors import CharLSTMError
from charlstm.evaluate import bits_per_char
from charlstm.run_folder import CONFIG, METRICS, History, RunFolder, flatten

CURVES_PNG, SAMPLES_MD, TENSORBOARD_DIR = "curves.png", "samples.md", "tensorboard"
# metrics.jsonl fields logged as TensorBoard scalars.
SCALARS = ("train_loss", "val_loss", "val_bpc", "chars_per_second")
# Marks the prompt inside a sample, so a reader sees where the model's own text starts.
PROMPT_OPEN, PROMPT_CLOSE = "«", "»"
# Leaderboard columns after 'run' and the config fields that differ between the runs: 'best val_bpc'
# is the per-epoch metric's (eval.protocol) best; the final_* ones score that checkpoint (final_metrics.json),
# one per registered protocol; a leaderboard shows those that some run scored.
FINAL_COLUMNS = {f"final {name} val_bpc": ("val", name) for name in protocols.NAMES}
RESULT_COLUMNS = ("best val_bpc", *FINAL_COLUMNS, "best epoch", "epochs", "train seconds", "sample")
BPC_COLUMNS = ("best val_bpc", *FINAL_COLUMNS)
MARKDOWN_SAMPLE_CHARS = 48
# While training, curves.png and samples.md are rewritten at most this often, and when training stops.
REFRESH_SECONDS = 30.0


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yields a temporary path to write; it then replaces `path` at once, so no reader sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    yield tmp
    os.replace(tmp, path)


def save_png(fig: Figure, path: Path) -> None:
    """Writes the figure as a PNG that replaces `path` at once."""
    with _replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _by_epoch(samples: list[dict]) -> dict[int, dict]:
    """Samples records by epoch; the last record wins (an epoch re-run after a crash writes another)."""
    return {record["epoch"]: record for record in samples}


def _fenced(text: str) -> str:
    """`text` as a Markdown code block, fenced with more backticks than it contains in a row."""
    longest = max(map(len, re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def marked_sample(prompt: str, text: str) -> str:
    """A sample as Markdown: the prompt between « and », then what the model wrote."""
    return _fenced(f"{PROMPT_OPEN}{prompt}{PROMPT_CLOSE}{text}")


def plot_run_curves(metrics: list[dict], path: Path, title: str) -> None:
    """Writes `run_curves` as a PNG at `path`."""
    save_png(run_curves(metrics, title), path)


def run_curves(metrics: list[dict], title: str) -> Figure:
    """Train and validation bits per character per epoch, the best validation epoch marked."""
    epochs = [m["epoch"] for m in metrics]
    best = min(metrics, key=lambda m: m["val_loss"])
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    train_bpc, val_bpc = [bits_per_char(m["train_loss"]) for m in metrics], [m["val_bpc"] for m in metrics]
    ax.plot(epochs, train_bpc, "o-", ms=3, label="train bits per character (mean over the epoch)")
    protocol = f"{best['val_protocol']} protocol, " if "val_protocol" in best else ""
    ax.plot(epochs, val_bpc, "o-", ms=3, label=f"validation bits per character ({protocol}end of the epoch)")
    ax.axvline(best["epoch"], color="grey", ls=":", lw=1)
    ax.plot(
        best["epoch"], best["val_bpc"], "*", ms=14, color="crimson",
        label=f"best: epoch {best['epoch']}, val_bpc {best['val_bpc']:.3f}",
    )
    ax.set(xlabel="epoch", ylabel="bits per character", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def samples_markdown(metrics: list[dict], samples: list[dict]) -> str:
    """Every epoch's samples, oldest first, each temperature with its prompt marked, as Markdown."""
    val_bpc = {m["epoch"]: m["val_bpc"] for m in metrics}
    intro = (
        "# Samples per epoch\n\nEach epoch the model continues a random prompt from the validation "
        f"text at each temperature. The prompt is between {PROMPT_OPEN} and {PROMPT_CLOSE}; "
        "the rest is the model's.\n"
    )
    parts = [intro]
    for epoch, record in sorted(_by_epoch(samples).items()):
        score = f" (val_bpc {val_bpc[epoch]:.3f})" if epoch in val_bpc else ""
        parts.append(f"## Epoch {epoch}{score}\n")
        for sample in record["samples"]:
            parts.append(f"Temperature {sample['temperature']}:\n\n{marked_sample(record['prompt'], sample['text'])}\n")
    return "\n".join(parts)


def write_run_reports(history: History) -> None:
    """(Re)writes curves.png and samples.md of a run folder from its epochs' metrics and samples; in a
    multi-process run only the process that writes the folder does."""
    run = history.run
    if not run.writes:
        return
    if history.metrics:
        plot_run_curves(history.metrics, run.path / CURVES_PNG, run.path.name)
    with _replacing(run.path / SAMPLES_MD) as tmp:
        tmp.write_text(samples_markdown(history.metrics, history.samples))


@contextlib.contextmanager
def refreshing(history: History, every_seconds: float = REFRESH_SECONDS) -> Iterator[Callable[[], None]]:
    """Yields `refresh()`, to call after each epoch appended to `history`: it rewrites the run's reports
    (write_run_reports) after the first epoch and then at most every `every_seconds`; leaving the block,
    also by an exception, brings them up to date. Plotting every epoch of a fast run costs more than its
    training."""
    last, written = -math.inf, len(history.metrics)

    def refresh() -> None:
        nonlocal last, written
        if time.monotonic() - last >= every_seconds:
            write_run_reports(history)
            last, written = time.monotonic(), len(history.metrics)

    try:
        yield refresh
    except BaseException:
        if len(history.metrics) != written:
            with contextlib.suppress(OSError):  # A full disk must not hide why training stopped.
                write_run_reports(history)
        raise
    if len(history.metrics) != written:
        write_run_reports(history)


def log_epoch_to_tensorboard(run: RunFolder, metrics: dict, samples: dict) -> None:
    """Writes an epoch's SCALARS and samples (as text) under the run folder's tensorboard/, step = epoch.

    Each call writes its own event file, which begins by purging steps >= its epoch: an
    epoch re-run after a crash replaces that epoch's earlier events instead of doubling them.
    In a multi-process run only the process that writes the folder does.
    """
    if not run.writes:
        return
    # Imported here, only when TensorBoard logging is on: tensorboardX imports PyTorch where it is
    # installed, which costs every run seconds of start-up and hundreds of MiB.
    from tensorboardX import SummaryWriter

    epoch = metrics["epoch"]
    logdir = str(run.path / TENSORBOARD_DIR)
    with SummaryWriter(logdir, purge_step=epoch, filename_suffix=f".epoch{epoch}") as writer:
        for name in SCALARS:
            writer.add_scalar(name, metrics[name], epoch)
        for sample in samples["samples"]:
            text = marked_sample(samples["prompt"], sample["text"])
            writer.add_text(f"samples/temperature_{sample['temperature']}", text, epoch)


def _labels(paths: list[Path]) -> list[str]:
    """Short unique names: each path relative to the folder all of them share."""
    if len(paths) == 1:
        return [paths[0].resolve().name]
    common = Path(os.path.commonpath([p.resolve() for p in paths]))
    return [str(p.resolve().relative_to(common)) for p in paths]


def not_a_run(path: Path) -> str | None:
    """Why `path` is no run folder to compare ('is a file', no metrics.jsonl or config.json), or None."""
    if path.is_file():
        return f"{str(path)!r} is a file, not a run folder"
    if not (path / METRICS).is_file() or not (path / CONFIG).is_file():
        return f"{str(path)!r} is not a run folder (no {METRICS} or {CONFIG})"
    return None


def _read_run(path: Path) -> tuple[dict, list[dict], list[dict], dict]:
    """A finished-epoch run's config (flattened), metrics, samples and final metrics; refuses anything else."""
    if reason := not_a_run(path):
        raise CharLSTMError(f"{reason}: give folders written by scripts/train.py or scripts/sweep.py")
    run = RunFolder(path, read_only=True)
    metrics = run.read_metrics()
    if not metrics:
        raise CharLSTMError(f"run folder {str(path)!r} has no finished epoch yet: train it first")
    return flatten(run.read_config()), metrics, run.read_samples(), run.read_final_metrics()


def _result(metrics: list[dict], samples: list[dict], final: dict) -> dict:
    """A run's RESULT_COLUMNS: its best epoch by val_bpc, the best checkpoint's final scores (None where
    not computed), the training time, that epoch's lowest-temperature sample."""
    best = min(metrics, key=lambda m: m["val_bpc"])
    record = _by_epoch(samples).get(best["epoch"])
    sample = min(record["samples"], key=lambda s: s["temperature"])["text"] if record else ""
    finals = [final.get(split, {}).get(protocol, {}).get("bpc") for split, protocol in FINAL_COLUMNS.values()]
    values = (best["val_bpc"], *finals, best["epoch"], metrics[-1]["epoch"], sum(m["seconds"] for m in metrics), sample)
    return dict(zip(RESULT_COLUMNS, values))


def plot_validation_curves(runs: dict[str, list[dict]], path: Path) -> None:
    """Each run's bits per character per epoch (validation solid, training dashed) in one PNG;
    the legend lists the runs in the given order with their best val_bpc."""
    legend_rows = math.ceil(len(runs) / 2)
    fig = Figure(figsize=(9, 4.5 + 0.25 * legend_rows), layout="constrained")
    ax = fig.add_subplot()
    for label, metrics in runs.items():
        epochs = [m["epoch"] for m in metrics]
        best = min(m["val_bpc"] for m in metrics)
        (line,) = ax.plot(epochs, [m["val_bpc"] for m in metrics], "o-", ms=3, label=f"{label} (best {best:.3f})")
        train_bpc = [bits_per_char(m["train_loss"]) for m in metrics]
        ax.plot(epochs, train_bpc, "--", lw=1, color=line.get_color(), alpha=0.6)
    ax.set(
        xlabel="epoch", ylabel="bits per character",
        title="validation (solid) and training (dashed) bits per character",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(2, len(runs)), fontsize="small")
    save_png(fig, path)


def compare_runs(paths: list[Path], plot_path: Path) -> list[dict]:
    """Leaderboard rows of the runs, best val_bpc first, and their curves overlaid at `plot_path`.

    A row holds 'run', the config fields whose values differ between the runs (a sweep's
    overrides), then RESULT_COLUMNS.
    """
    paths = [Path(p) for p in paths]
    runs = dict(zip(_labels(paths), map(_read_run, paths)))
    configs = [config for config, *_ in runs.values()]
    fields = sorted({f for c in configs for f in c if any(c.get(f) != other.get(f) for other in configs)})
    rows = sorted(
        ({"run": label, **{f: config.get(f) for f in fields}, **_result(metrics, samples, final)}
         for label, (config, metrics, samples, final) in runs.items()),
        key=lambda row: row["best val_bpc"],
    )
    plot_validation_curves({row["run"]: runs[row["run"]][1] for row in rows}, plot_path)
    unscored = [c for c in FINAL_COLUMNS if all(row[c] is None for row in rows)]
    return [{c: v for c, v in row.items() if c not in unscored} for row in rows]


def _cell(column: str, value) -> str:
    """A leaderboard value as Markdown table text."""
    if column in BPC_COLUMNS:
        return "—" if value is None else f"{value:.4f}"
    if column == "train seconds":
        return f"{value:.1f}"
    if column == "sample":
        return value[:MARKDOWN_SAMPLE_CHARS].replace("\n", " ↵ ") + ("…" if len(value) > MARKDOWN_SAMPLE_CHARS else "")
    return str(value)


def table_markdown(rows: list[dict], cell: Callable[[str, object], str]) -> str:
    """The rows as a Markdown table, the columns those of the first row, each value as `cell(column, value)`
    gives it, with `|` escaped."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, row[c]).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def leaderboard_markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (samples shortened, newlines shown as ↵)."""
    return table_markdown(rows, _cell)


def table_csv(rows: list[dict]) -> str:
    """The rows as CSV with full-precision numbers and whole texts (None as an empty field)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()

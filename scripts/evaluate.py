"""Scores a trained run on its validation text or any text file: val_loss (nats/char) and val_bpc.

    python scripts/evaluate.py --workdir runs/obama
    python scripts/evaluate.py --workdir runs/obama --text some_speech.txt --tsv surprisal.tsv --html surprisal.html

The metric is DESIGN.md's val_loss: every character at position >= data.seq_length,
each predicted from exactly its preceding data.seq_length characters (of the
validation text, only the first eval.max_chars when that is set, as in training). A text
file is cleaned as the training text was; characters the cleaning removes are
dropped with a warning, characters it keeps that the run never saw are an
error (--config.sample.oov=skip drops them). --tsv and --html write each
scored character's surprisal; the HTML page shades it, to show where the
model is confused.
"""

import sys

import numpy as np
from absl import flags

from charlstm import cli, data, evaluate, runs
from charlstm.errors import CharLSTMError

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_TEXT = flags.DEFINE_string("text", "", "UTF-8 text file to score; empty: the run's own validation text.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
_TSV = flags.DEFINE_string("tsv", "", "Write per-character surprisal (position, char, bits) to this TSV file.")
_HTML = flags.DEFINE_string("html", "", "Write the text shaded by per-character surprisal to this HTML file.")
cli.define_config_overrides(runs.default_config(), "Overrides of the run's config, e.g. --config.eval.batch_size=256.")
flags.mark_flags_as_required(["workdir"])


def text_ids(run: runs.Run) -> tuple[str, np.ndarray]:
    """What to score: a name for it and its ids `[n]`, from --text or the run's validation split."""
    if not _TEXT.value:
        ids = evaluate.limit(run.corpus().val_ids, run.config.data.seq_length, run.config.eval.max_chars)
        return f"the validation text of {run.path}", ids
    ids, warnings = run.encode(data.read_text(_TEXT.value).text, f"text of {_TEXT.value!r}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if len(ids) <= run.config.data.seq_length:
        raise CharLSTMError(
            f"{_TEXT.value!r} has {len(ids)} characters after cleaning; scoring needs more than "
            f"data.seq_length={run.config.data.seq_length}: give a longer text"
        )
    return _TEXT.value, ids


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise CharLSTMError(f"unexpected arguments {argv[1:]}: give the file as --text FILE")
    run = runs.load(_WORKDIR.value, _CHECKPOINT.value, cli.config_overrides())
    name, ids = text_ids(run)
    seq_length = run.config.data.seq_length
    nll = evaluate.per_char_nll(run.graphdef, run.params, ids, seq_length, run.config.eval.batch_size)
    val_loss = evaluate.average(nll)
    print(
        f"val_loss {val_loss:.4f}  val_bpc {evaluate.bits_per_char(val_loss):.4f}  "
        f"({len(nll):,} characters of {name}, checkpoint step {run.step})"
    )
    text = run.vocab.decode(ids)
    if _TSV.value:
        cli.write_file(_TSV.value, evaluate.surprisal_tsv(text, nll), "tsv")
    if _HTML.value:
        title = f"{name} under {run.path} (step {run.step}): {evaluate.bits_per_char(val_loss):.3f} bits/char"
        cli.write_file(_HTML.value, evaluate.surprisal_html(text, nll, title), "html")


if __name__ == "__main__":
    cli.run(main)

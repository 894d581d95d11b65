"""Fine-tuning: a new run starts from a trained run's best weights (train.init_from), on its own vocabulary.

The weights indexed by character (model.vocab_axes) are re-indexed from the
source run's vocabulary to the new corpus's: a character both share keeps
its trained row, bit for bit; a new character gets the row a new model for
the new vocabulary starts with (the same seed and init as a run from
scratch); a character the new corpus lacks is dropped. Every other weight is
the source's; the optimizer starts fresh. Only a new run starts from the
source: a resumed one restores its own checkpoint, and does not read it.
"""

from pathlib import Path

import jax
import ml_collections
import numpy as np

from charlstm import data, trained_run
from charlstm.checkpoints import steps_on_disk
from charlstm.errors import CharLSTMError
from charlstm.model import SHAPE_FIELDS, vocab_axes
from charlstm.run_folder import RunFolder


def source_run(config: ml_collections.ConfigDict, workdir: str | Path) -> trained_run.Run | None:
    """The run `config.train.init_from` names, at its best checkpoint, checked to fit `config`'s model; None
    when init_from is "" or `workdir` holds checkpoints (a resumed run restores its own). Raises CharLSTMError
    for `workdir` itself, a folder that is not a run or finished no epoch, and a model of another shape."""
    if not (path := config.train.init_from):
        return None
    if Path(path).resolve() == Path(workdir).resolve():
        raise CharLSTMError(
            f"train.init_from={path!r} is this run's own folder (--workdir): give another run to start from, "
            "or drop train.init_from"
        )
    if steps_on_disk(Path(workdir) / "checkpoints"):
        return None
    if not steps_on_disk(Path(path) / "checkpoints"):
        why = "it has no checkpoint" if Path(path).is_dir() else "no such folder"
        raise CharLSTMError(
            f"train.init_from={path!r} is not a trained run ({why}): give a folder scripts/train.py trained in, "
            "e.g. runs/obama"
        )
    folder = RunFolder.open(path)
    if folder.checkpoints.best_step() is None:
        raise CharLSTMError(
            f"train.init_from run {path!r} has no finished epoch, so no best checkpoint to start from: train it "
            "until an epoch ends, or give another run"
        )
    source = trained_run.read(folder)
    check_model(source.config, config, path)
    return source


def check_model(source: ml_collections.ConfigDict, config: ml_collections.ConfigDict, path: str) -> None:
    """Refuses a source run whose model differs from `config`'s in a field that shapes the weights
    (model.SHAPE_FIELDS), naming the fields and the overrides that match it."""
    fields = [f for f in SHAPE_FIELDS if source.model[f] != config.model[f]]
    if fields:
        theirs = ", ".join(f"model.{f}={source.model[f]!r} (this run: {config.model[f]!r})" for f in fields)
        overrides = " ".join(f"--config.model.{f}={source.model[f]}" for f in fields)
        raise CharLSTMError(
            f"train.init_from run {path!r} has another model: {theirs}: pass {overrides} to start from it, "
            "or give a run with this model"
        )


def transfer(old_params: dict, old_vocab: data.Vocab, new_vocab: data.Vocab, fresh_params: dict) -> dict:
    """The new run's params as NumPy arrays: `old_params` (trained on `old_vocab`) with each axis indexed by
    character re-indexed to `new_vocab`, a shared character's slice from `old_params`, a new one's from
    `fresh_params` (a new model's for `new_vocab`)."""
    kept = shared_chars(old_vocab, new_vocab)
    new_ids = np.array([new_vocab.chars.index(c) for c in kept], int)
    old_ids = np.array([old_vocab.chars.index(c) for c in kept], int)
    axes = vocab_axes(fresh_params)

    def param(path: tuple, fresh, old) -> np.ndarray:
        axis = axes.get(tuple(key.key for key in path))
        if axis is None:
            return np.asarray(old)
        rows = np.array(fresh)  # A copy, whose slices of shared characters are then overwritten.
        np.moveaxis(rows, axis, 0)[new_ids] = np.moveaxis(np.asarray(old), axis, 0)[old_ids]
        return rows

    return jax.tree.map_with_path(param, fresh_params, old_params)


def shared_chars(old_vocab: data.Vocab, new_vocab: data.Vocab) -> str:
    """The characters of both vocabularies, in the new one's order."""
    return "".join(c for c in new_vocab.chars if c in old_vocab.chars)


def record(source: trained_run.Run, new_vocab: data.Vocab) -> dict:
    """What run_info.jsonl records of a start from `source`: its folder, step and the vocabulary mapping
    (characters that kept their trained rows, new ones, dropped ones)."""
    return {
        "path": str(source.path.resolve()),
        "step": source.step,
        "kept": shared_chars(source.vocab, new_vocab),
        "added": source.vocab.missing(new_vocab.chars),
        "dropped": new_vocab.missing(source.vocab.chars),
    }


def describe(record: dict) -> str:
    """A start from a source run (a `record`) in one line, as training prints it."""
    counts = ", ".join(f"{len(record[k])} {k} {record[k]!r}" for k in ("kept", "added", "dropped"))
    return f"starting from {record['path']} at step {record['step']}; characters: {counts}"

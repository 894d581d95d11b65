"""A trained run loaded from its folder, and text put into its vocabulary (generate, evaluate, benchmark).

A checkpoint holds the vocabulary and the config it was trained with: loading
reads both from there, the config over the defaults (charlstm/default_config.py),
so a run saved before a field existed gets that field's default, and
command-line overrides on top. Nothing of training, plotting or TensorBoard is
imported, and nothing outside the package is read, so a run loads from any
install.
"""

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from charlstm import averaging, data
from charlstm import config as config_lib
from charlstm.checkpoints import Checkpoints, first_line
from charlstm.errors import CharLSTMError
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer
from charlstm.run_folder import RunFolder

default_config = config_lib.default_config  # What the scripts' --config.* overrides are typed by.
# How often a reader re-resolves its checkpoint when a trainer rotates it out before it is read.
READ_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder's model at one checkpoint, with the vocab and config it was trained with."""

    folder: RunFolder
    config: ml_collections.ConfigDict  # The checkpoint's config over the defaults, with the caller's overrides.
    vocab: data.Vocab
    graphdef: nnx.GraphDef
    params: dict
    step: int

    @property
    def path(self) -> Path:
        return self.folder.path

    def corpus(self) -> data.Corpus:
        """The run's corpus, re-read from its file; refuses a file that changed since training."""
        corpus = data.load_corpus(self.config.data)
        self.folder.check_corpus(corpus)
        return corpus
    def encode(self, text: str, what: str) -> tuple[np.ndarray, list[str]]:
        """Ids `[n]` of `text` cleaned as the training text was, and warnings naming what was dropped.

        Characters the cleaning removes are dropped; characters that survive it but
        are not in the vocabulary are an error, or dropped when sample.oov='skip'.
        `what` names the text in messages, e.g. 'prompt'.
        """
        d, oov = self.config.data, self.config.sample.oov
        warnings = []
        if removed := "".join(sorted(c for c in set(text) if not data.clean_text(c, d.keep_chars, False))):
            warnings.append(f"dropped {removed!r} from the {what}: the training text's cleaning removes them")
        cleaned = data.clean_text(text, d.keep_chars, d.lowercase)
        if missing := self.vocab.missing(cleaned):
            if oov == "error":
                raise CharLSTMError(
                    f"the {what} has characters {missing!r} that are not in the run's vocabulary "
                    f"{self.vocab.chars!r}: remove them, or pass --config.sample.oov=skip to drop them"
                )
            warnings.append(f"dropped {missing!r} from the {what}: not in the run's vocabulary (sample.oov='skip')")
            cleaned = "".join(c for c in cleaned if c not in missing)
        return self.vocab.encode(cleaned), warnings


def trained_config(saved: dict, overrides: dict) -> ml_collections.ConfigDict:
    """A checkpoint's config over the defaults, then `overrides` ({'sample.top_k': 5, ...}), validated."""
    config = config_lib.with_defaults(saved)
    config.update_from_flattened_dict(overrides)
    config_lib.validate(config)
    return config


def checkpoint_step(checkpoints: Checkpoints, which: str) -> int:
    """The step `which` names: 'best' (lowest val_loss), 'latest' or a step number."""
    steps = checkpoints.manager.all_steps()
    if not steps:
        raise CharLSTMError("the run folder has no checkpoint yet: train it until an epoch ends")
    if which == "best":
        if (best := checkpoints.best_step()) is None:
            raise CharLSTMError(
                f"no epoch has finished, so there is no best checkpoint: pass --checkpoint=latest (step {steps[-1]})"
            )
        return best
    if which == "latest":
        return checkpoints.latest_step()
    if not which.isdigit() or int(which) not in steps:
        raise CharLSTMError(f"there is no checkpoint {which!r}: use best, latest or one of the steps {steps}")
    return int(which)


def load(workdir: str | Path, checkpoint: str = "best", overrides: dict | None = None) -> Run:
    """The run in `workdir` at `checkpoint` ('best', 'latest' or a step number); only its model is read."""
    return read(RunFolder.open(workdir), checkpoint, overrides)


def read(folder: RunFolder, checkpoint: str = "best", overrides: dict | None = None) -> Run:
    """The run in `folder` at `checkpoint`, as load() says, also while a trainer writes the folder.

    The step is resolved from the folder's listing; when it cannot be read, the
    listing is read again: a step the trainer rotated out meanwhile is resolved
    anew (latest: the latest that still exists; a number: no longer there), and
    only a step that is still there and does not load is reported as damaged.
    """
    checkpoints = folder.checkpoints
    for _ in range(READ_ATTEMPTS):
        step = checkpoint_step(checkpoints, checkpoint)
        try:
            return _read_step(folder, step, overrides or {})
        except CharLSTMError:
            raise
        except Exception as e:  # noqa: BLE001 -- whatever a vanished or damaged file raises.
            checkpoints.manager.reload()
            if checkpoint_step(checkpoints, checkpoint) == step:
                others = [s for s in checkpoints.complete_steps() if s != step]
                raise CharLSTMError(
                    f"checkpoint step {step} in {checkpoints.directory} does not load ({first_line(e)}): "
                    f"pass --checkpoint with one of the other steps {others}, or resume training there"
                ) from None
    raise CharLSTMError(
        f"checkpoint {checkpoint!r} of {str(folder.path)!r} was replaced {READ_ATTEMPTS} times while being read: "
        "pass --checkpoint with a step number, or read it after training"
    )


def _read_step(folder: RunFolder, step: int, overrides: dict) -> Run:
    """Checkpoint `step`'s model, vocab and config (over the defaults, then `overrides`)."""
    meta = folder.checkpoints.restore_meta(step)
    config, vocab = trained_config(meta.config, overrides), data.Vocab(meta.vocab)
    graphdef, like = split_model(create_model(config, vocab.size))
    return Run(folder, config, vocab, graphdef, model_params(folder.checkpoints, step, config, like), step)


def model_params(checkpoints: Checkpoints, step: int, config: ml_collections.ConfigDict, like: dict) -> dict:
    """The model's weights in checkpoint `step` (averaging.model_params), shaped like `like`; only the
    part of the state that holds them is read: the optimizer state when it keeps an average, else the params."""
    if config.train.average_decay:
        opt_state = checkpoints.restore_part(step, "opt_state", make_optimizer(config.train, 1).init(like))
        return averaging.model_params(None, opt_state)
    return checkpoints.restore_params(step, like)

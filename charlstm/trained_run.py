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

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from charlstm import averaging, data
from charlstm import config as config_lib
from charlstm.checkpoints import Checkpoints, first_line
from charlstm.errors import CharLSTMError
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer
from charlstm.run_folder import RunFolder, refuse_file

default_config = config_lib.default_config  # What the scripts' --config.* overrides are typed by.


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder's model at one checkpoint, with the vocab and config it was trained with."""

    path: Path
    config: ml_collections.ConfigDict  # The checkpoint's config over the defaults, with the caller's overrides.
    vocab: data.Vocab
    graphdef: nnx.GraphDef
    params: dict
    step: int

    def corpus(self) -> data.Corpus:
        """The run's corpus, re-read from its file; refuses a file that changed since training."""
        corpus = data.load_corpus(self.config.data)
        RunFolder(self.path).check_corpus(corpus)
        if corpus.vocab != self.vocab:
            raise CharLSTMError(
                f"the corpus {corpus.source!r} changed since run folder {str(self.path)!r} was trained: "
                "restore the file it was trained on"
            )
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
    """The run in `workdir` at `checkpoint` ('best', 'latest' or a step number); only its params are read."""
    workdir = Path(workdir)
    refuse_file(workdir)
    if not workdir.is_dir():
        raise CharLSTMError(
            f"run folder {str(workdir)!r} does not exist: train one with scripts/train.py --workdir {workdir}"
        )
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoint_step(checkpoints, checkpoint)
    meta = checkpoints.restore_meta(step)
    config, vocab = trained_config(meta["config"], overrides or {}), data.Vocab(meta["vocab"])
    graphdef, like = split_model(create_model(config, vocab.size))
    try:
        if config.train.average_decay:  # The weights' average, kept in the optimizer state, is the model.
            opt_state = make_optimizer(config.train, 1).init(like)
            params = averaging.averaged(checkpoints.restore_part(step, "opt_state", abstract(opt_state)))
        else:
            params = checkpoints.restore_params(step, abstract(like))
    except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises.
        others = [s for s in checkpoints.complete_steps() if s != step]
        raise CharLSTMError(
            f"checkpoint step {step} in {checkpoints.directory} does not load ({first_line(e)}): "
            f"pass --checkpoint with one of the other steps {others}, or resume training there"
        ) from None
    return Run(workdir, config, vocab, graphdef, params, step)


def abstract(tree):
    """Shapes and dtypes of a tree's arrays, as a restore needs them."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

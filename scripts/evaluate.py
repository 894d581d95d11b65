"""Scores a trained run on its validation or test text, or any text file: loss (nats/char) and bpc.

    python scripts/evaluate.py --workdir runs/obama
    python scripts/evaluate.py --workdir runs/obama --protocol stream
    python scripts/evaluate.py --workdir runs/obama --dynamic --dynamic_lr 1e-4 --dynamic_decay 1e-3
    python scripts/evaluate.py --workdir runs/obama --mix_ngram 12
    python scripts/evaluate.py --workdir runs/obama --dynamic --mix_ngram 12 --tune
    python scripts/evaluate.py --workdir runs/obama --text some_speech.txt --tsv surprisal.tsv --html surprisal.html

Every protocol scores the characters at position >= data.seq_length (of the
validation text, only the first eval.max_chars when that is set, as in
training); charlstm.protocols lists them. --dynamic (the same as --protocol
dynamic) adapts a copy of the weights to the text as it scores it, with the
run's eval.dynamic settings, which --dynamic_lr, --dynamic_decay and
--dynamic_segment override. --mix_ngram ORDER interpolates the model with a
Kneser-Ney model of that order fitted on the run's training text, the weight fitted on
validation when scoring --split test, else on each half of the scored text and
reported on the other. A text file is cleaned as the training text was;
characters the cleaning removes are dropped with a warning, characters it
keeps that the run never saw are an error (--config.sample.oov=skip drops
them). --tsv and --html write each scored character's surprisal (the mixture's
with --mix_ngram); the HTML page shades it, to show where the model is confused.
--tune chooses --dynamic's lr and decay (over charlstm.tuning.GRID) and the
mixture's weight on the first half of the scored text and scores the second.
"""

import json
import sys

import numpy as np
from absl import flags

from charlstm import cli, data, evaluate, mixture, protocols, trained_run, tuning
from charlstm.errors import CharLSTMError

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_TEXT = flags.DEFINE_string("text", "", "UTF-8 text file to score; empty: the run's own --split.")
_SPLIT = flags.DEFINE_enum("split", "val", ["val", "test"], "The run's split to score when no --text is given.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "window", list(protocols.NAMES), "How characters are scored (charlstm.protocols)."
)
_DYNAMIC = flags.DEFINE_bool("dynamic", False, "The same as --protocol dynamic: adapt the weights while scoring.")
_DYNAMIC_LR = flags.DEFINE_float("dynamic_lr", None, "--dynamic: step size; default: eval.dynamic.learning_rate")
_DYNAMIC_DECAY = flags.DEFINE_float(
    "dynamic_decay", None, "--dynamic: pull toward the trained weights per step, in [0, 1]; default: eval.dynamic.decay"
)
_DYNAMIC_SEGMENT = flags.DEFINE_integer(
    "dynamic_segment", None,
    "--dynamic: characters scored, then trained on, per step; default: eval.dynamic.segment_length",
)
# The eval.dynamic setting each --dynamic_* flag overrides.
_DYNAMIC_FLAGS = {"learning_rate": _DYNAMIC_LR, "decay": _DYNAMIC_DECAY, "segment_length": _DYNAMIC_SEGMENT}
_MIX_NGRAM = flags.DEFINE_integer("mix_ngram", 0, "Interpolate with a Kneser-Ney model of this order; 0 = off.")
_TSV = flags.DEFINE_string(
    "tsv", "", "Write per-character surprisal (position, char, bits) to this TSV file; the mixture's with --mix_ngram."
)
_HTML = flags.DEFINE_string(
    "html", "", "Write the text shaded by per-character surprisal to this HTML file; the mixture's with --mix_ngram."
)
_TUNE = flags.DEFINE_bool(
    "tune", False, "Choose --dynamic's lr and decay (charlstm.tuning.GRID) and --mix_ngram's weight on the first "
    "half of the scored text; report the second half.",
)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of lines.")
cli.define_config_overrides(
    trained_run.default_config(), "Overrides of the run's config, e.g. --config.eval.batch_size=256."
)
flags.mark_flags_as_required(["workdir"])


def text_ids(run: trained_run.Run, corpus: data.Corpus | None, text_path: str, split: str) -> tuple[str, np.ndarray]:
    """What to score: a name for it and its ids `[n]`, from the file `text_path` or, when that is empty, the
    run's `split` of `corpus`."""
    if text_path:
        text, d, removal = data.read_text(text_path).text, run.config.data, data.Removal()
        removal.add(text, d.keep_chars)
        kept = set(data.clean_text(text, d.keep_chars, d.lowercase))
        warning = data.check_cleaning(removal, kept, repr(text_path))
        ids, warnings = run.encode(text, f"text of {text_path!r}")
        warnings += [warning] if warning else []
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if len(ids) <= run.config.data.seq_length:
            raise CharLSTMError(
                f"{text_path!r} has {len(ids)} characters after cleaning; scoring needs more than "
                f"data.seq_length={run.config.data.seq_length}: give a longer text"
            )
        return text_path, ids
    if split == "test" and not len(corpus.test_ids):
        raise CharLSTMError(
            f"run folder {str(run.path)!r} has no test split (data.test_fraction=0): score --split val, "
            "or train a run with --config.data.test_fraction=0.1"
        )
    ids = corpus.test_ids if split == "test" else corpus.val_ids
    return f"the {split} text of {run.path}", evaluate.scored_ids(ids, run.config)


def check_flags() -> None:
    """Refuses flag combinations and values that cannot be scored, before any work."""
    if _DYNAMIC.value and _PROTOCOL.present:
        raise CharLSTMError("--dynamic scores as a stream of its own: drop --protocol, or drop --dynamic")
    if _MIX_NGRAM.value < 0:
        raise CharLSTMError(f"--mix_ngram={_MIX_NGRAM.value} is invalid: give an n-gram order >= 1, or 0 for none")
    if _TEXT.value and _SPLIT.present:
        raise CharLSTMError("--text and --split both name what to score: give one of them")
    given = {field: flag for field, flag in _DYNAMIC_FLAGS.items() if flag.present}
    if given and not (_DYNAMIC.value or _PROTOCOL.value == "dynamic"):
        first = next(iter(given.values())).name
        raise CharLSTMError(f"--{first} only acts with --dynamic (or --protocol dynamic): add it, or drop --{first}")
    dynamic = _DYNAMIC.value or _PROTOCOL.value == "dynamic"
    if _TUNE.value and not (dynamic or _MIX_NGRAM.value):
        raise CharLSTMError("--tune chooses --dynamic's settings and --mix_ngram's weight: add one of them")
    if _TUNE.value and (tuned := [f.name for f in (_DYNAMIC_LR, _DYNAMIC_DECAY) if f.present]):
        raise CharLSTMError(f"--tune chooses --{tuned[0]} itself: drop --{tuned[0]}, or drop --tune")
    defaults = trained_run.default_config().eval.dynamic.to_dict()
    settings = {**defaults, **{field: flag.value for field, flag in given.items()}}
    names = {**protocols.dynamic.CONFIG_NAMES, **{field: f"--{flag.name}" for field, flag in given.items()}}
    if problem := protocols.dynamic.Settings(**settings).problem(names):
        raise CharLSTMError(problem)


def dynamic_overrides() -> dict:
    """The --dynamic_* flags given, as the eval.dynamic config overrides they stand for."""
    return {f"eval.dynamic.{field}": flag.value for field, flag in _DYNAMIC_FLAGS.items() if flag.present}


def model_nll(run: trained_run.Run, ids: np.ndarray, scoring: evaluate.Scoring) -> np.ndarray:
    """The run's NLL `[n]` of the scored characters of `ids`, under `scoring`."""
    return evaluate.per_char_nll(run.graphdef, run.params, ids, scoring)


def main() -> None:
    check_flags()
    text_path, split, order = _TEXT.value, _SPLIT.value, _MIX_NGRAM.value
    protocol = "dynamic" if _DYNAMIC.value else _PROTOCOL.value
    run = trained_run.load(_WORKDIR.value, _CHECKPOINT.value, {**cli.config_overrides(), **dynamic_overrides()})
    mixture.check_order(order, run.config.data.seq_length)
    needs_corpus = not text_path or protocols.PROTOCOLS[protocol].reads_training_text or order
    corpus = run.corpus() if needs_corpus else None  # Read (and checked) once: it may be large.
    scoring = evaluate.Scoring.from_config(run.config, protocol, corpus.train_ids if corpus else None)
    name, ids = text_ids(run, corpus, text_path, split)
    label, first = "text" if text_path else split, run.config.data.seq_length
    tuned, validation = None, None
    if _TUNE.value:  # The first half chooses; the second, never seen by the choice, is scored.
        (tune_ids, ids), name = tuning.halves(ids, first), f"the second half of {name}"
        if protocol == "dynamic":
            scoring, grid = tuning.tune_dynamic(run.graphdef, run.params, tune_ids, scoring)
            tuned = {"chosen": {k: scoring.settings[k] for k in tuning.GRID}, "grid": grid}
        if order:
            validation = tune_ids, model_nll(run, tune_ids, scoring)
    elif order and mixture.fits_on_validation(label):
        val_ids = evaluate.scored_ids(corpus.val_ids, run.config)
        validation = val_ids, model_nll(run, val_ids, scoring)
    nll = model_nll(run, ids, scoring)
    loss = evaluate.average(nll)
    result = {
        "text": name, "checkpoint_step": run.step, "protocol": protocols.PROTOCOLS[protocol].label(scoring),
        "chars": len(nll), f"{label}_loss": loss, f"{label}_bpc": evaluate.bits_per_char(loss),
    }
    if tuned:
        result["tuned"] = tuned
    if order:
        fitted_on = "the first half" if _TUNE.value else "validation"
        nll, info = mixture.ngram_mixture(corpus, order, first, (ids, nll), validation, fitted_on)
        loss = evaluate.average(nll)
        result["mixture"] = {**info, f"{label}_loss": loss, f"{label}_bpc": evaluate.bits_per_char(loss)}
    if _JSON.value:
        print(json.dumps(result))
    else:
        print(describe(result, label))
    text = run.vocab.decode(ids)
    if _TSV.value:
        cli.write_file(_TSV.value, evaluate.surprisal_tsv(text, nll), "tsv")
    if _HTML.value:
        title = f"{name} under {run.path} (step {run.step}): {evaluate.bits_per_char(loss):.3f} bits/char"
        cli.write_file(_HTML.value, evaluate.surprisal_html(text, nll, title), "html")


def describe(result: dict, label: str) -> str:
    """The result as lines: the model's score, then the mixture's."""
    scored = f"{result['chars']:,} characters of {result['text']}, checkpoint step {result['checkpoint_step']}"
    score = f"{label}_loss {result[f'{label}_loss']:.4f}  {label}_bpc {result[f'{label}_bpc']:.4f}"
    lines = [f"{score}  ({result['protocol']}; {scored})"]
    if tuned := result.get("tuned"):
        grid = ", ".join(f"lr {p['learning_rate']:g} decay {p['decay']:g}: {p['bpc']:.4f}" for p in tuned["grid"])
        lines.append(f"chosen on the first half: lr {tuned['chosen']['learning_rate']:g}, decay "
                     f"{tuned['chosen']['decay']:g} (bpc there: {grid})")
    if mix := result.get("mixture"):
        weights = ", ".join(f"{w:.3f}" for w in mix["model_weights"])
        lines.append(
            f"{label}_loss {mix[f'{label}_loss']:.4f}  {label}_bpc {mix[f'{label}_bpc']:.4f}  mixed with "
            f"Kneser-Ney order {mix['order']} (alone {mix['ngram_bpc']:.4f} bpc; model weight {weights}, "
            f"fitted on {mix['fitted_on']})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main, "give the file as --text FILE")

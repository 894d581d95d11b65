"""Config checks run before any work, and the config's JSON form kept in run folders."""

import importlib.util
import json
from pathlib import Path

import ml_collections

from charlstm import cells, corpora, lstm, protocols
from charlstm import default_config as default_config_module
from charlstm.errors import CharLSTMError

_AT_LEAST_ONE = (
    "data.seq_length",
    "model.units",
    "model.num_layers",
    "train.batch_size",
    "train.epochs",
    "train.log_every_steps",
    "eval.batch_size",
    "eval.segment_length",
    "eval.burn_in",
    "sample.length",
)


def get_field(config: ml_collections.ConfigDict, field: str):
    """The value of a dotted field, e.g. 'model.units'; KeyError naming the first missing part."""
    node = config
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def _fail(field: str, value, allowed: str) -> None:
    raise CharLSTMError(f"config field {field}={value!r} is invalid: it must be {allowed}")


def _one_of(names) -> str:
    return "one of " + ", ".join(map(repr, names))


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises CharLSTMError naming the first field outside its allowed range."""
    for field in _AT_LEAST_ONE:
        value = get_field(config, field)
        if not isinstance(value, int) or value < 1:
            _fail(field, value, "an integer >= 1")
    if not 0 < config.data.val_fraction < 1:
        _fail("data.val_fraction", config.data.val_fraction, "in (0, 1)")
    if not 0 <= config.data.test_fraction < 1 - config.data.val_fraction:
        _fail(
            "data.test_fraction", config.data.test_fraction,
            f"in [0, 1 - data.val_fraction) = [0, {1 - config.data.val_fraction:g}), so some text is left to train on",
        )
    _validate_corpus(config.data)
    if config.eval.protocol not in protocols.PROTOCOLS:
        _fail("eval.protocol", config.eval.protocol, _one_of(protocols.NAMES))
    final = config.eval.final_protocols
    if not isinstance(final, (tuple, list)) or not all(p in protocols.PROTOCOLS for p in final):
        _fail("eval.final_protocols", final, f"a tuple of {_one_of(protocols.NAMES)}, e.g. '(\"window\",)'; () = none")
    for name, protocol in protocols.PROTOCOLS.items():
        if reason := protocol.unavailable(protocols.Scoring.from_config(config, name)):
            raise CharLSTMError(f"config field {reason}")
    for field in ("data.max_chars", "eval.max_chars"):
        if get_field(config, field) < 0:
            _fail(field, get_field(config, field), ">= 0 (0 = all)")
    if not config.train.learning_rate > 0:
        _fail("train.learning_rate", config.train.learning_rate, "> 0")
    if config.train.schedule not in ("constant", "cosine"):
        _fail("train.schedule", config.train.schedule, "'constant' or 'cosine'")
    if config.train.warmup_steps < 0:
        _fail("train.warmup_steps", config.train.warmup_steps, ">= 0")
    if config.model.cell not in cells.CELLS:
        _fail("model.cell", config.model.cell, _one_of(cells.NAMES))
    if config.model.lstm_impl not in lstm.CHOICES:
        _fail("model.lstm_impl", config.model.lstm_impl, _one_of(lstm.CHOICES))
    if config.model.lstm_impl not in (impls := cells.CELLS[config.model.cell].lstm_impls):
        _fail("model.lstm_impl", config.model.lstm_impl, f"{_one_of(impls)} with model.cell={config.model.cell!r}")
    _validate_methods(config)
    for field in ("model.dropout", "model.weight_dropout", "model.embed_dropout", "train.average_decay"):
        if not 0 <= get_field(config, field) < 1:
            _fail(field, get_field(config, field), "in [0, 1)")
    for field in (
        "model.embed_dim", "train.clip_norm", "train.weight_decay", "train.patience", "train.activation_reg",
        "train.temporal_activation_reg",
    ):
        if get_field(config, field) < 0:
            _fail(field, get_field(config, field), ">= 0 (0 = off)")
    if not 0 <= config.train.stop_after_epoch <= config.train.epochs:
        _fail("train.stop_after_epoch", config.train.stop_after_epoch, "in [0, train.epochs] (0 = off)")
    if not 0 <= config.train.recent_epochs <= config.train.epochs:
        _fail("train.recent_epochs", config.train.recent_epochs, "in [0, train.epochs] (0 = off)")
    if not 0 < config.train.recent_fraction <= 1:
        _fail("train.recent_fraction", config.train.recent_fraction, "in (0, 1]")
    if config.train.stateful and config.train.objective != "all":
        _fail("train.stateful", True, "False with train.objective='last' (stateful needs 'all')")
    if config.train.dtype not in ("float32", "bfloat16"):
        _fail("train.dtype", config.train.dtype, "'float32' or 'bfloat16'")
    if config.train.objective not in ("all", "last"):
        _fail("train.objective", config.train.objective, "'all' or 'last'")
    temperatures = config.sample.temperatures
    if not isinstance(temperatures, (tuple, list)) or not temperatures or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0 for t in temperatures
    ):
        _fail("sample.temperatures", temperatures, "a non-empty tuple of numbers >= 0, e.g. '(0.5,1.2)'")
    if config.sample.top_k < 0:
        _fail("sample.top_k", config.sample.top_k, ">= 0 (0 = off)")
    if not 0 < config.sample.top_p <= 1:
        _fail("sample.top_p", config.sample.top_p, "in (0, 1]")
    if config.sample.oov not in ("error", "skip"):
        _fail("sample.oov", config.sample.oov, "'error' or 'skip'")


def _validate_methods(config: ml_collections.ConfigDict) -> None:
    """The fields of the tied head and the mogrifier: each only with the fields it needs."""
    m = config.model
    if m.tie_weights and not m.embed_dim:
        _fail("model.tie_weights", True, "False with model.embed_dim=0: give an embedding, e.g. model.embed_dim=64")
    if not isinstance(m.mogrifier_rounds, int) or m.mogrifier_rounds < 0:
        _fail("model.mogrifier_rounds", m.mogrifier_rounds, "an integer >= 0 (0 = a plain LSTM)")
    if m.mogrifier_rounds and m.cell != "mogrifier":
        allowed = f"0 with model.cell={m.cell!r}, or set model.cell='mogrifier'"
        _fail("model.mogrifier_rounds", m.mogrifier_rounds, allowed)


def _validate_corpus(data: ml_collections.ConfigDict) -> None:
    """A built-in corpus's name, and its own settings: set only for the corpus that reads them, and in range."""
    if data.corpus and not data.path and data.corpus not in corpora.CORPORA:
        _fail("data.corpus", data.corpus, f"{_one_of(corpora.NAMES)}, or give your own file as data.path")
    for name, corpus in corpora.CORPORA.items():
        for field in corpus.fields:
            if (value := data[field.removeprefix("data.")]) and (data.corpus != name or data.path):
                _fail(field, value, f"0 unless data.corpus={name!r} (and no data.path)")
    if data.corpus in corpora.CORPORA and (reason := corpora.CORPORA[data.corpus].problem(data)):
        raise CharLSTMError(f"config field {reason}")


def default_config() -> ml_collections.ConfigDict:
    """Every config field at its default (charlstm/default_config.py)."""
    return default_config_module.get_config()


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A saved config (as a dict, JSON lists allowed) over the defaults: fields added since it was saved
    get their defaults."""
    config = default_config()
    config.update(from_json(json.dumps(saved)))
    return config


def is_saved(path: str | Path) -> bool:
    """Whether `path` names a saved config (a run folder, or a JSON file such as its config.json), not a
    config file with get_config()."""
    return Path(path).is_dir() or Path(path).suffix == ".json"


def from_saved(path: str | Path) -> ml_collections.ConfigDict:
    """The config a run trained with, from its folder's config.json or that file, over the defaults."""
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    try:
        saved = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else f"not JSON: {e}"
        raise CharLSTMError(
            f"cannot read the saved config {str(file)!r} ({reason}): give a run folder or its config.json"
        ) from None
    if not isinstance(saved, dict):
        raise CharLSTMError(f"{str(file)!r} holds no config (not a JSON object): give a run folder's config.json")
    return with_defaults(saved)


def from_file(path: str | Path) -> ml_collections.ConfigDict:
    """Calls get_config() of a config file, e.g. configs/tiny.py building on the defaults."""
    spec = importlib.util.spec_from_file_location(f"charlstm_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


def from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a saved config; JSON lists become tuples, as configs write them."""

    def tuples(value):
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return tuple(value) if isinstance(value, list) else value

    return ml_collections.ConfigDict(tuples(json.loads(text)))

import json

import ml_collections
import pytest

from charlstm import CharLSTMError, data
from charlstm import config as config_lib
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_are_valid_and_round_trip_through_json(path):
    config = config_lib.from_file(path)
    config_lib.validate(config)
    assert config_lib.from_json(config_lib.to_json(config)) == config


@pytest.mark.parametrize("field, value, allowed", [
    ("data.seq_length", 0, ">= 1"),
    ("model.units", 0, ">= 1"),
    ("model.num_layers", -1, ">= 1"),
    ("train.batch_size", 0, ">= 1"),
    ("train.epochs", 0, ">= 1"),
    ("train.learning_rate", 0.0, "> 0"),
    ("data.val_fraction", 1.0, "in (0, 1)"),
    ("data.val_fraction", 0.0, "in (0, 1)"),
    ("train.objective", "some", "'all' or 'last'"),
    ("train.dtype", "float16", "'float32' or 'bfloat16'"),
    ("sample.temperatures", (0.5, -1.0), "numbers >= 0"),
    ("sample.temperatures", ("abc",), "numbers >= 0"),
    ("sample.top_p", 0.0, "in (0, 1]"),
    ("sample.top_p", 1.5, "in (0, 1]"),
    ("sample.length", 0, ">= 1"),
    ("eval.max_chars", -1, ">= 0"),
    ("eval.protocol", "windows", "one of 'window', 'segments', 'stream', 'dynamic'"),
    ("eval.burn_in", -5, ">= 1"),
    ("eval.segment_length", 0, ">= 1"),
    ("eval.final_protocols", ("window", "exact"), "a tuple of one of 'window'"),
    ("data.test_fraction", 0.9, "in [0, 1 - data.val_fraction) = [0, 0.9)"),
    ("data.test_fraction", -0.1, "in [0, 1 - data.val_fraction)"),
    ("train.log_every_steps", 0, "an integer >= 1"),
    ("data.seq_length", 2.5, "an integer >= 1"),
    ("eval.final_protocols", "window", "a tuple of one of 'window'"),
    ("sample.temperatures", 0.5, "a non-empty tuple"),
    ("eval.batch_size", 0, "an integer >= 1"),
    ("data.first_year", 2000, "0 unless data.corpus='sotu'"),  # tiny.py reads the 'obama' corpus.
    ("data.last_year", 2000, "0 unless data.corpus='sotu'"),
    ("data.max_chars", -1, ">= 0 (0 = all)"),
    ("train.schedule", "linear", "'constant' or 'cosine'"),
    ("train.warmup_steps", -1, ">= 0"),
    ("model.cell", "lstmp", "one of 'lstm', 'gru', 'rnn'"),
    ("data.corpus", "nope", "one of 'obama', 'sotu', or give your own file as data.path"),
    ("model.dropout", 1.0, "in [0, 1)"),
    ("model.dropout", -0.1, "in [0, 1)"),
    ("model.weight_dropout", 1.0, "in [0, 1)"),
    ("model.embed_dropout", 1.0, "in [0, 1)"),
    ("model.embed_dropout", -0.1, "in [0, 1)"),
    ("train.activation_reg", -1.0, ">= 0 (0 = off)"),
    ("train.temporal_activation_reg", -0.5, ">= 0 (0 = off)"),
    ("model.mogrifier_rounds", 3, "0 with model.cell='lstm', or set model.cell='mogrifier'"),
    ("model.tie_weights", True, "False with model.embed_dim=0: give an embedding, e.g. model.embed_dim=64"),
    ("train.average_decay", 1.0, "in [0, 1)"),
    ("model.embed_dim", -1, ">= 0 (0 = off)"),
    ("train.clip_norm", -1.0, ">= 0 (0 = off)"),
    ("train.weight_decay", -0.1, ">= 0 (0 = off)"),
    ("train.patience", -1, ">= 0 (0 = off)"),
    ("train.stop_after_epoch", 3, "in [0, train.epochs]"),  # tiny.py trains 2 epochs.
    ("train.recent_epochs", 3, "in [0, train.epochs] (0 = off)"),
    ("train.recent_epochs", -1, "in [0, train.epochs] (0 = off)"),
    ("train.recent_fraction", 0.0, "in (0, 1]"),
    ("train.recent_fraction", 1.5, "in (0, 1]"),
    ("sample.temperatures", (), "a non-empty tuple"),
    ("sample.temperatures", (True,), "numbers >= 0"),
    ("sample.top_k", -1, ">= 0 (0 = off)"),
    ("sample.oov", "drop", "'error' or 'skip'"),
])
def test_each_invalid_field_is_named_with_its_range(field, value, allowed):
    assert_refused({field: value}, field, value, allowed)


@pytest.mark.parametrize("settings, field, value, allowed", [
    ({"data.corpus": "sotu", "data.path": "speech.txt", "data.first_year": 2000}, "data.first_year", 2000,
     "(and no data.path)"),
    ({"data.corpus": "sotu", "data.first_year": -1}, "data.first_year", -1, ">= 0 (0 = no bound)"),
    ({"data.corpus": "sotu", "data.last_year": -1}, "data.last_year", -1, ">= 0 (0 = no bound)"),
    ({"data.corpus": "sotu", "data.first_year": 2000, "data.last_year": 1990}, "data.last_year", 1990,
     ">= data.first_year=2000 (or 0)"),
    ({"train.stateful": True, "train.objective": "last"}, "train.stateful", True, "(stateful needs 'all')"),
    ({"model.cell": "gru", "model.lstm_impl": "xla"}, "model.lstm_impl", "xla", "one of 'auto' with model.cell='gru'"),
    ({"model.cell": "gru", "model.mogrifier_rounds": 2}, "model.mogrifier_rounds", 2, "0 with model.cell='gru'"),
    ({"model.cell": "mogrifier", "model.mogrifier_rounds": -1}, "model.mogrifier_rounds", -1, "an integer >= 0"),
    ({"model.cell": "mogrifier", "model.mogrifier_rounds": 2.5}, "model.mogrifier_rounds", 2.5, "an integer >= 0"),
    ({"model.cell": "mogrifier", "model.lstm_impl": "xla"}, "model.lstm_impl", "xla", "with model.cell='mogrifier'"),
])
def test_fields_invalid_together_are_named_with_what_they_need(settings, field, value, allowed):
    assert_refused(settings, field, value, allowed)


def assert_refused(settings: dict, field: str, value, allowed: str) -> None:
    """validate() refuses configs/tiny.py with `settings` ({'section.name': value}) in one line naming
    `field`, its value and what it must be."""
    fields = config_lib.from_file(REPO / "configs" / "tiny.py").to_dict()
    for name, setting in settings.items():
        section, key = name.split(".")
        fields[section][key] = setting
    config = ml_collections.ConfigDict(fields)  # Built anew, so a value may have another type (as JSON can).
    with pytest.raises(CharLSTMError) as error:
        config_lib.validate(config)
    message = str(error.value)
    assert f"{field}={value!r}" in message and allowed in message and "\n" not in message, message


def test_text_file_config_needs_a_path():
    config = config_lib.from_file(REPO / "configs" / "text_file.py")
    with pytest.raises(CharLSTMError, match="--config.data.path"):
        data.load_corpus(config.data)


def test_a_saved_config_is_read_from_a_run_folder_or_its_json_over_the_defaults(tmp_path):
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    saved = config.to_dict()
    del saved["sample"]["oov"]  # A field added after the run was saved gets its default.
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert config_lib.is_saved(tmp_path) and config_lib.is_saved(tmp_path / "config.json")
    assert not config_lib.is_saved(REPO / "configs" / "tiny.py")
    assert config_lib.from_saved(tmp_path) == config_lib.from_saved(tmp_path / "config.json") == config


@pytest.mark.parametrize("content, words", [(None, "No such file"), ("{", "not JSON"), ("[1]", "not a JSON object")])
def test_an_unreadable_saved_config_is_one_line(tmp_path, content, words):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(CharLSTMError, match=words) as error:
        config_lib.from_saved(tmp_path)
    assert "\n" not in str(error.value)

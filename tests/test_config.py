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
    ("eval.protocol", "windows", "one of 'window', 'segments', 'stream'"),
    ("eval.burn_in", -5, ">= 1"),
    ("eval.segment_length", 0, ">= 1"),
    ("eval.final_protocols", ("window", "exact"), "a tuple of one of 'window'"),
    ("data.test_fraction", 0.9, "in [0, 1 - data.val_fraction) = [0, 0.9)"),
    ("data.test_fraction", -0.1, "in [0, 1 - data.val_fraction)"),
])
def test_each_invalid_field_is_named_with_its_range(field, value, allowed):
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(CharLSTMError) as error:
        config_lib.validate(config)
    message = str(error.value)
    assert f"{field}={value!r}" in message and allowed in message and "\n" not in message


def test_text_file_config_needs_a_path():
    config = config_lib.from_file(REPO / "configs" / "text_file.py")
    with pytest.raises(CharLSTMError, match="--config.data.path"):
        data.load_corpus(config.data)

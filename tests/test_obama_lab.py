"""configs/obama_lab.py: the lab's settings, and its first epoch end to end on the tiny corpus."""

import json
import math

import pytest

from charlstm import config as config_lib
from charlstm.train import train_and_evaluate
from tests.conftest import REPO


def test_the_lab_config_has_the_labs_settings():
    config = config_lib.from_file(REPO / "configs" / "obama_lab.py")
    assert (config.train.objective, config.model.units, config.train.batch_size) == ("last", 128, 256)
    assert (config.train.learning_rate, config.train.epochs, config.data.val_fraction) == (1e-3, 50, 0.2)
    assert (config.sample.temperatures, config.sample.length, config.data.seq_length) == ((0.5, 1.2), 100, 100)


@pytest.mark.slow
def test_the_lab_config_trains_its_first_epoch_on_the_tiny_corpus(tiny_config, tmp_path):
    config = config_lib.from_file(REPO / "configs" / "obama_lab.py")
    config.data.dir, config.data.max_chars = tiny_config.data.dir, 8_000  # The tiny corpus's first 8k.
    config.train.epochs = 1
    (metrics,) = train_and_evaluate(config, tmp_path / "run")
    n_train = round(config.data.max_chars * (1 - config.data.val_fraction))
    assert metrics["step"] == (n_train - config.data.seq_length) // 256  # Every stride-1 window, one target each.
    vocab_size = len(json.loads((tmp_path / "run" / "vocab.json").read_text())["chars"])
    assert metrics["val_loss"] < math.log(vocab_size)  # Better than a uniform guess.
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [(s["temperature"], len(s["text"])) for s in record["samples"]] == [(0.5, 100), (1.2, 100)]

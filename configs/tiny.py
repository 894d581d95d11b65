"""A run of seconds for tests and CI: 20k characters of the Obama corpus, a small model.

    python scripts/train.py --config configs/tiny.py --workdir runs/tiny
"""

from charlstm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.data.max_chars = 20_000
    config.data.seq_length = 20
    config.model.units = 32
    config.train.batch_size = 16
    config.train.epochs = 2
    config.train.learning_rate = 1e-2
    config.eval.batch_size = 256
    config.sample.length = 40
    return config

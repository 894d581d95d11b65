"""The headline run: a 128-unit LSTM on Obama's State of the Union addresses (2010-2016).

    python scripts/train.py --config configs/obama.py

Measured on a 2-core CPU: 30 epochs, best val_bpc 2.057 (val_loss 1.426 nats)
at epoch 29 after 150 s of training; the whole command, evaluation and samples
included, about 7 minutes (9 min 15 s with other work on the same cores); peak
RSS 1.0 GiB. val_loss 1.754 (the Keras lab after 8 minutes) comes after 24 s of
training, at epoch 6. These are the values of configs/default.py.
"""

from pathlib import Path

from charlstm import config as config_lib


def get_config():
    return config_lib.from_file(Path(__file__).with_name("default.py"))

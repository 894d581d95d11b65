"""The headline run: a 128-unit LSTM on Obama's State of the Union addresses (2010-2016).

    python scripts/train.py --config configs/obama.py

Measured on a 2-core CPU (`/usr/bin/time -v` of the command above): 30 epochs,
best val_bpc 2.059 (val_loss 1.427 nats) at epoch 29 after 11.7 s of training;
the whole command (start-up, per-epoch validation, samples, checkpoints and
the exact scoring of the best checkpoint included) 20 s; peak RSS 621 MiB.
Per epoch, validation uses the cheap 'segments' protocol (0.7 s over all 30
epochs); on the best checkpoint it, the exact 'window' protocol and 'stream'
agree to 1e-6 bits (docs/metric.md). Its curve is in README. These are the
default values; configs/obama_best.py trains a larger, regularised model longer.
"""

from charlstm import config as config_lib


def get_config():
    return config_lib.default_config()

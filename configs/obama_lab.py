"""The original Keras lab, as faithfully as our data allows: to reproduce its numbers next to configs/obama.py.

    python scripts/train.py --config configs/obama_lab.py

What matches the lab: a 128-unit LSTM over one-hot characters (initialised as Keras does:
Glorot, orthogonal recurrent kernel, forget-gate bias 1), the lab's cleaning, 100
characters of context, its many-to-one objective (objective 'last': every stride-1 window,
one target each), batch 256, Adam at Keras's default rate 1e-3, 50 epochs, 20% held out for
validation, and each epoch's samples of 100 characters at temperatures 0.5 and 1.2.
What differs: the corpus is Obama's State of the Union addresses (the lab's own text is not
shipped); validation is the contiguous last 20% with no overlapping windows across the split;
windows are really shuffled; optax's Adam epsilon is 1e-8 (Keras: 1e-7).

Expected time on a 2-core CPU: about an hour for the 50 epochs, a little over a minute per
epoch: 852 steps of 256 windows (each window: 100 LSTM steps for one target) at about 0.08 s
per step, plus about 5 s to evaluate the 54,589 validation characters (the benchmark's
evaluation speed, about 11,000 characters per second). Measured, not run in
full: `python scripts/train.py --config configs/obama_lab.py --config.data.max_chars=64000
--config.train.epochs=2` trained 199 steps per epoch in 16 s and 15 s, 0.93 GiB peak RSS.
An epoch here runs about 90 times the LSTM steps of a configs/obama.py epoch (each character is
read in 100 overlapping windows) and takes about 90 times its training time.
"""

from charlstm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.data.val_fraction = 0.2
    config.train.objective = "last"
    config.train.batch_size = 256
    config.train.learning_rate = 1e-3
    config.train.epochs = 50
    config.sample.temperatures = (0.5, 1.2)
    config.sample.length = 100
    return config

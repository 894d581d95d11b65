"""Seconds per training step of the original Keras lab's model, to compare with ours at the same shapes.

The lab's model: LSTM(128) over 100 one-hot characters (45 here, as in the Obama corpus), a Dense
softmax over the next character, categorical cross-entropy, Adam; batch 256. charlstm runs the same
shapes with `python scripts/benchmark.py --section train --config configs/obama_lab.py`.

TensorFlow is not a charlstm dependency (it pins its own numpy and ml_dtypes), so this script
imports nothing from charlstm and runs from an environment of its own:

    python -m venv /tmp/keras-lab && /tmp/keras-lab/bin/pip install tensorflow-cpu
    /tmp/keras-lab/bin/python scripts/benchmark_keras_lab.py
"""

import json
import statistics
import sys
import time

import numpy as np
from absl import app, flags

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Windows per step (the lab's).", lower_bound=1)
_STEPS = flags.DEFINE_integer("train_steps", 20, "Timed steps after warm-up; the median counts.", lower_bound=1)
SEQ_LENGTH, VOCAB, UNITS, WARMUP_STEPS = 100, 45, 128, 3


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"unexpected arguments {argv[1:]}: this script takes only flags")
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        sys.exit("TensorFlow is not installed here: run this script from its own environment (see its docstring)")
    model = keras.Sequential(
        [keras.Input((SEQ_LENGTH, VOCAB)), keras.layers.LSTM(UNITS), keras.layers.Dense(VOCAB, activation="softmax")]
    )
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    batch = _BATCH_SIZE.value
    one_hot = np.eye(VOCAB, dtype=np.float32)
    x = one_hot[rng.integers(VOCAB, size=(batch, SEQ_LENGTH))]
    y = one_hot[rng.integers(VOCAB, size=batch)]
    times = []
    for step in range(WARMUP_STEPS + _STEPS.value):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"tensorflow": tf.__version__, "keras": keras.__version__, "batch_size": batch,
                      "keras_train_step_seconds": statistics.median(times[WARMUP_STEPS:])}))


if __name__ == "__main__":
    app.run(main)

"""Seconds per training step of the original Keras lab's model, timed the lab's own way, to compare with ours.

The lab's model: LSTM(128) over 100 one-hot characters (45 here, as in the Obama corpus), a Dense
softmax over the next character, categorical cross-entropy, Adam; batch 256; trained with
`model.fit` on boolean one-hot arrays, shuffled, as the lab trained it. A callback times each batch
(`on_train_batch_begin` to `on_train_batch_end`: fetching the batch, the step, reading the loss);
the first --warmup_steps batches (tracing, compiling) do not count. The lab's validation pass at the
end of each epoch is not part of a step and is left out. To run it in turns with charlstm's step at
the same shapes, pass this environment's Python to `scripts/benchmark.py --keras_python`.

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
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 3, "Steps run before timing (the first compiles).", lower_bound=1)
_SEQ_LENGTH = flags.DEFINE_integer("seq_length", 100, "Characters per window (the lab's).", lower_bound=1)
_UNITS = flags.DEFINE_integer("units", 128, "LSTM units (the lab's).", lower_bound=1)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a line of text.")
# The Obama corpus's vocabulary size after the lab's cleaning (charlstm's benchmark uses the same).
VOCAB = 45


def step_seconds(keras, model, x: np.ndarray, y: np.ndarray, batch_size: int) -> list[float]:
    """Seconds of each batch of one epoch of `model.fit` over `x`, `y`: from the callback before the batch
    to the one after it (Keras has read the loss by then, so the step has finished)."""
    times = []

    class BatchTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[BatchTimer()])
    return times


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit(f"unexpected arguments {argv[1:]}: this script takes only flags")
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        sys.exit("TensorFlow is not installed here: run this script from its own environment (see its docstring)")
    model = keras.Sequential(
        [keras.Input((_SEQ_LENGTH.value, VOCAB)), keras.layers.LSTM(_UNITS.value),
         keras.layers.Dense(VOCAB, activation="softmax")]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    rng = np.random.default_rng(0)
    batch, warmup = _BATCH_SIZE.value, _WARMUP_STEPS.value
    windows = batch * (warmup + _STEPS.value)  # Exactly warm-up plus timed steps: no short last batch.
    one_hot = np.eye(VOCAB, dtype=bool)  # The lab's X and y are boolean one-hot arrays.
    x = one_hot[rng.integers(VOCAB, size=(windows, _SEQ_LENGTH.value))]
    y = one_hot[rng.integers(VOCAB, size=windows)]
    times = step_seconds(keras, model, x, y, batch)[warmup:]
    report = {"tensorflow": tf.__version__, "keras": keras.__version__, "batch_size": batch,
              "seq_length": _SEQ_LENGTH.value, "units": _UNITS.value, "timed_steps": len(times),
              "keras_train_step_seconds": statistics.median(times),
              "keras_train_step_seconds_min": min(times), "keras_train_step_seconds_max": max(times)}
    if _JSON.value:
        print(json.dumps(report))
    else:
        print(", ".join(f"{name} {value}" for name, value in report.items()))


if __name__ == "__main__":
    app.run(main)

"""Characters per second of each evaluation protocol (charlstm.evaluate: window, segments, stream,
with the default eval settings) and of dynamic evaluation (charlstm.dynamic_eval, its gradient
statistics included), on random characters."""

import functools

import numpy as np

from charlstm import dynamic_eval, evaluate, trained_run
from charlstm.benchmarks import Model
from charlstm.benchmarks.timing import fastest
from charlstm.config import PROTOCOLS


def eval_section(model: Model, chars: int, repeats: int) -> dict:
    """Characters per second of each protocol and of dynamic evaluation at the default settings, scoring
    `chars` random characters; the fastest of `repeats` calls counts."""
    graphdef, params, vocab_size, seq_length = model
    ids = np.random.default_rng(0).integers(vocab_size, size=seq_length + chars).astype(np.int32)
    config = trained_run.default_config()
    config.data.seq_length = seq_length
    methods = {
        protocol: functools.partial(
            evaluate.mean_nll, graphdef, params, ids, evaluate.Scoring.from_config(config, protocol)
        )
        for protocol in PROTOCOLS
    }
    methods["dynamic"] = functools.partial(
        dynamic_eval.per_char_nll, graphdef, params, ids, seq_length, ids, dynamic_eval.Settings()
    )
    speeds = {}
    for name, run in methods.items():
        run()
        speeds[name] = chars / fastest(run, repeats)
    return {"eval_chars_per_second": speeds}

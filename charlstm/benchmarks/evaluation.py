"""Characters per second of each registered evaluation protocol (charlstm.protocols: window, segments,
stream and dynamic evaluation, its gradient statistics included) at the default settings, on random
characters."""

import functools

import numpy as np

from charlstm import evaluate, protocols, trained_run
from charlstm.benchmarks import Model
from charlstm.benchmarks.timing import fastest


def eval_section(model: Model, chars: int, repeats: int) -> dict:
    """Characters per second of each protocol at the default settings, scoring `chars` random characters
    (dynamic evaluation adapts on the same characters); the fastest of `repeats` calls counts."""
    graphdef, params, vocab_size, seq_length = model
    ids = np.random.default_rng(0).integers(vocab_size, size=seq_length + chars).astype(np.int32)
    config = trained_run.default_config()
    config.data.seq_length = seq_length
    methods = {
        protocol: functools.partial(
            evaluate.mean_nll, graphdef, params, ids, evaluate.Scoring.from_config(config, protocol, train_ids=ids)
        )
        for protocol in protocols.NAMES
    }
    speeds = {}
    for name, run in methods.items():
        run()
        speeds[name] = chars / fastest(run, repeats)
    return {"eval_chars_per_second": speeds}

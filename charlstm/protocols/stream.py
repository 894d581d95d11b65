"""The stream protocol: one state carried from the text's first character to its last, at batch 1,
one cell step per character, as published character-level results are measured (they score from
the first character on; we skip the first `first`)."""

import math

import numpy as np
from flax import nnx

from charlstm import parallel
from charlstm.protocols.base import Scoring, sequence_nll

# Time steps per call: bounds the protocol's memory on long texts.
STREAM_CHUNK = 4096


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - first]`, one state carried from ids[0]."""
    return stream_nll(graphdef, params, ids, scoring.first)


def stream_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, first: int, chunk: int = STREAM_CHUNK) -> np.ndarray:
    """NLL `[len(ids) - first]` of one stream over `ids`, run in calls of `chunk` steps (the last one
    padded at its end, which changes nothing before it), joined on the host: a text of any number of
    chunks compiles nothing more."""
    ids = np.asarray(ids, np.int32)
    steps = len(ids) - 1  # Input ids[t] predicts ids[t + 1].
    chunk = min(chunk, steps)
    padded = np.zeros(math.ceil(steps / chunk) * chunk + 1, np.int32)
    padded[: len(ids)] = ids
    state, parts = None, []
    for at in range(0, steps, chunk):
        nll, state = sequence_nll(
            graphdef, params, padded[None, at : at + chunk], padded[None, at + 1 : at + chunk + 1], state
        )
        parts.append(nll[0])
    return np.concatenate([parallel.to_host(part) for part in parts])[first - 1 : steps]

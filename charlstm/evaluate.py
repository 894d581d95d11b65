"""Validation loss as DESIGN.md defines it, for a model on any id sequence.

Every character at position >= seq_length is predicted from exactly its
preceding seq_length characters (a fresh LSTM state per window), so the
number does not depend on batch size or on where windows happen to start.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from charlstm.data import gather_windows


@functools.partial(jax.jit, static_argnames=("graphdef", "seq_length"))
def window_nll(graphdef: nnx.GraphDef, params, ids: jax.Array, starts: jax.Array, seq_length: int):
    """NLL in nats `[batch]` of ids[start + seq_length] given the seq_length ids before it."""
    model = nnx.merge(graphdef, params)
    windows = gather_windows(ids, starts, seq_length + 1)
    hs, _ = model.features(windows[:, :-1])
    logits = model.head(hs[:, -1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, -1])


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, seq_length: int, batch_size: int) -> np.ndarray:
    """NLL in nats `[len(ids) - seq_length]` of every id at position >= seq_length."""
    count = len(ids) - seq_length
    starts = np.arange(math.ceil(count / batch_size) * batch_size, dtype=np.int32)
    starts[count:] = 0  # Padding rows repeat a valid window; they are dropped below.
    device_ids = jnp.asarray(ids)
    parts = [
        window_nll(graphdef, params, device_ids, batch, seq_length)
        for batch in starts.reshape(-1, batch_size)
    ]
    return np.asarray(jnp.concatenate(parts))[:count]


def mean_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, seq_length: int, batch_size: int) -> float:
    """`val_loss`: the mean of `per_char_nll`, in nats per character."""
    return float(np.mean(per_char_nll(graphdef, params, ids, seq_length, batch_size), dtype=np.float64))


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)

"""The window protocol, exact: each scored character predicted from exactly the `first` characters
before it, from a zero state; `first` cell steps per scored character."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm import parallel
from charlstm.data import gather_windows
from charlstm.protocols.base import Scoring, batches, nll_of


@functools.partial(jax.jit, static_argnames=("graphdef", "seq_length"))
def window_nll(graphdef: nnx.GraphDef, params, ids: jax.Array, starts: jax.Array, seq_length: int):
    """NLL in nats `[batch]` of ids[start + seq_length] given the seq_length ids before it."""
    model = nnx.merge(graphdef, params)
    windows = gather_windows(ids, starts, seq_length + 1)
    hs, _ = model.features(windows[:, :-1])
    return nll_of(model.logits(hs[-1]), windows[:, -1])


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - first]`, each id from exactly the `first` before it."""
    first, mesh = scoring.first, parallel.make_mesh()
    count = len(ids) - first
    n_batches, rows = batches(count, scoring.batch_size, mesh)
    starts = np.zeros(n_batches * rows, np.int32)  # Padding rows repeat a valid window; they are dropped below.
    starts[:count] = np.arange(count)
    params = parallel.put(params, parallel.replicated(mesh))
    device_ids = parallel.put(np.asarray(ids), parallel.replicated(mesh))
    parts = [
        window_nll(graphdef, params, device_ids, parallel.put(batch, parallel.batch_sharding(mesh)), first)
        for batch in starts.reshape(n_batches, rows)
    ]
    return parallel.to_host(jnp.concatenate(parts))[:count]

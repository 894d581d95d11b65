"""The segments protocol, the cheap per-epoch one: the scored characters cut into segments of
`segment_length`, run side by side as a batch, each warmed up unscored on the `burn_in` characters
before it; about (1 + burn_in / segment_length) cell steps per scored character.

Segments whose burn-in would reach before the text's start read it all from ids[0]: together they
are one stream over the text up to the end of the last of them, scored as such."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm import parallel
from charlstm.protocols.base import Scoring, batches, sequence_nll
from charlstm.protocols.stream import stream_nll


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - first]` (module docstring)."""
    n, first, segment_length, burn_in = len(ids), scoring.first, scoring.segment_length, scoring.burn_in
    starts = np.arange(first, n, segment_length)
    from_start = starts[starts < burn_in]
    parts = []
    if len(from_start):
        end = min(int(from_start[-1]) + segment_length, n)
        parts.append(stream_nll(graphdef, params, ids[:end], first))
    starts = starts[starts >= burn_in]
    if len(starts):
        parts.append(_burnt_in_segments(graphdef, params, ids, starts, scoring))
    return np.concatenate(parts)[: n - first]


def _burnt_in_segments(graphdef, params, ids, starts, scoring: Scoring):
    """NLL `[len(starts) * segment_length]` of the segments at `starts`, each after its full burn-in;
    past the text's end, positions repeat its last id and are scored (the caller drops them)."""
    segment_length, burn_in, mesh = scoring.segment_length, scoring.burn_in, parallel.make_mesh()
    n_batches, rows = batches(len(starts), scoring.batch_size, mesh)
    row_starts = np.full(n_batches * rows, starts[0])  # Padding rows repeat a segment; dropped below.
    row_starts[: len(starts)] = starts
    positions = np.minimum(row_starts[:, None] - burn_in + np.arange(burn_in + segment_length), len(ids) - 1)
    windows = np.asarray(ids, np.int32)[positions]
    params = parallel.put(params, parallel.replicated(mesh))
    batch = parallel.batch_sharding(mesh)
    parts = []
    for rows_of in windows.reshape(n_batches, rows, -1):
        rows_of = parallel.put(rows_of, batch)
        nll, _ = sequence_nll(graphdef, params, rows_of[:, :-1], rows_of[:, 1:], None)
        parts.append(nll[:, burn_in - 1 :])
    return parallel.to_host(jnp.concatenate(parts))[: len(starts)].reshape(-1)

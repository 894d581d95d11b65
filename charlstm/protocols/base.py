"""What every evaluation protocol shares: its settings (Scoring), the model's NLL of sequences, batching."""

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Scoring:
    """A protocol and its settings: which characters are scored and how (config.eval, data.seq_length)."""

    protocol: str  # A name in charlstm.protocols.PROTOCOLS.
    first: int  # Characters of context before the first scored one; the window protocol's window.
    segment_length: int  # 'segments': scored characters per segment.
    burn_in: int  # 'segments': characters read before each segment, unscored.
    batch_size: int  # Windows or segments per batch: memory and speed only, not the result.
    settings: Mapping = dataclasses.field(default_factory=dict)  # The protocol's own section, config.eval.<name>.
    train_ids: np.ndarray | None = None  # The training text `[n]`, for a protocol that adapts on it.

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, protocol: str | None = None, train_ids: np.ndarray | None = None
    ) -> "Scoring":
        """The scoring `config` sets up, under `protocol` (default: the per-epoch eval.protocol)."""
        e = config.eval
        protocol = protocol or e.protocol
        own = e.get(protocol)
        settings = own.to_dict() if isinstance(own, ml_collections.ConfigDict) else {}
        return cls(protocol, config.data.seq_length, e.segment_length, e.burn_in, e.batch_size, settings, train_ids)


def nll_of(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """NLL in nats of each target id under float32 logits `[..., vocab]`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


@functools.partial(jax.jit, static_argnames="graphdef")
def sequence_nll(graphdef: nnx.GraphDef, params, inputs: jax.Array, targets: jax.Array, state):
    """NLL `[batch, time]` of targets after each input, both ids `[batch, time]`, from `state`
    (None: zeros), and the state after the last input."""
    model = nnx.merge(graphdef, params)
    hs, state = model.features(inputs, state)
    return nll_of(model.logits(hs), targets.T).T, state


def batches(count: int, batch_size: int, mesh) -> tuple[int, int]:
    """(batches, rows per batch) for `count` rows in batches of at most `batch_size`, rows a
    multiple of the mesh size: equal batches, so one compiled shape serves all of them."""
    n_batches = max(math.ceil(count / batch_size), 1)
    rows = math.ceil(math.ceil(count / n_batches) / mesh.size) * mesh.size
    return n_batches, rows

"""The Mogrifier LSTM (Melis et al. 2020): before each LSTM step, the input x and the previous h gate each
other for `rounds` rounds (model.mogrifier_rounds), then the LSTM cell steps on them.

Round i (from 0) scales x by 2 sigmoid(h Q_i) when i is even, h by 2 sigmoid(x R_i) when i is odd; the
factor 2 makes zero pre-activations leave x and h as they are. Without rounds the layer is the LSTM, run
by the implementation model.lstm_impl names. With rounds it is an XLA scan with autodiff, over one-hot rows
for character ids: the rounds scale the input's entries, so there is no table to index.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from charlstm.cells import lstm
from charlstm.lstm.cell import Carry, lstm_cell

GATES, CARRY_SIZE = lstm.GATES, lstm.CARRY_SIZE
IMPLS = ("auto",)  # Only without rounds does an LSTM implementation run: the fastest.
step = lstm_cell  # The step after the rounds.


def round_kernels(in_features: int, units: int, rounds: int, rngs: nnx.Rngs) -> list[jax.Array]:
    """Round i's kernel: Q_i `[units, in_features]` when i is even (h gates x), R_i `[in_features, units]` when
    odd (x gates h); Glorot-uniform, as the input kernel."""
    init = nnx.initializers.glorot_uniform()
    return [init(rngs.params(), (units, in_features) if i % 2 == 0 else (in_features, units)) for i in range(rounds)]


def mogrify(kernels: Sequence[jax.Array], x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x `[batch, in]` and h `[batch, units]` after the rounds whose `kernels` are given."""
    for i, kernel in enumerate(kernels):
        if i % 2 == 0:
            x = 2 * jax.nn.sigmoid(h @ kernel) * x
        else:
            h = 2 * jax.nn.sigmoid(x @ kernel) * h
    return x, h


def scan(
    lstm_impl: str, input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array,
    *kernels: jax.Array,
) -> tuple[jax.Array, Carry]:
    """The layer over ids `[time, batch]` or features `[time, batch, in]` -> hs `[time, batch, units]` and the
    final (h, c), as charlstm.lstm.lstm_scan, with the rounds' `kernels`."""
    if not kernels:
        return lstm.scan(lstm_impl, input_kernel, recurrent_kernel, bias, carry, x)
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = jax.nn.one_hot(x, input_kernel.shape[0], dtype=input_kernel.dtype)

    def rounds_then_step(carry: Carry, x_t: jax.Array):
        h, c = carry
        x_t, h = mogrify(kernels, x_t, h)
        carry = step(recurrent_kernel, (h, c), x_t @ input_kernel + bias)
        return carry, carry[0]

    carry, hs = jax.lax.scan(rounds_then_step, carry, x)
    return hs, carry

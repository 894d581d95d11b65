"""The LSTM cell: gates (input, forget, cell, output), run by the implementation model.lstm_impl names."""

import jax
import jax.numpy as jnp

from charlstm import lstm
from charlstm.lstm.cell import lstm_cell

GATES, CARRY_SIZE = 4, 2
IMPLS = lstm.CHOICES  # Every implementation of charlstm.lstm, or 'auto'.
step = lstm_cell  # Written once for every implementation (charlstm.lstm.cell).
scan = lstm.lstm_scan  # The layer through the implementation model.lstm_impl names.


def initial_bias(units: int, gates: int) -> jax.Array:
    """Zeros but the forget gate's 1: the cell remembers by default early in training."""
    return jnp.zeros(gates * units).at[units : 2 * units].set(1.0)

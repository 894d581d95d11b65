"""The reference LSTM: autodiff through `lax.scan` of the cell. Slow to train (every intermediate is
saved, and each step's recurrent-weight gradient is a small matmul); the others are tested against it."""

from collections.abc import Callable

import jax

from charlstm.lstm.cell import Carry, input_projection, lstm_cell, projection_inputs


def scan_cell(cell: Callable, recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> tuple[jax.Array, Carry]:
    """Runs `cell` over time: `x_proj` `[time, batch, gates*units]` -> hs `[time, batch, units]`, final carry."""

    def step(carry, x_t):
        carry = cell(recurrent_kernel, carry, x_t)
        return carry, carry[0]

    carry, hs = jax.lax.scan(step, carry, x_proj)
    return hs, carry


def lstm_scan(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array):
    """charlstm.lstm's signature: ids `[time, batch]` or features `[time, batch, in]` -> (hs, (h, c))."""
    return scan_cell(lstm_cell, recurrent_kernel, carry, input_projection(*projection_inputs(input_kernel, bias, x)))


def unavailable(dtype) -> str | None:
    """Runs anywhere, in any dtype."""
    return None

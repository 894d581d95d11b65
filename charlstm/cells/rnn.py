"""The Elman RNN cell: h = tanh(x W + h U + b)."""

import jax
import jax.numpy as jnp

from charlstm.lstm.cell import Carry

GATES, CARRY_SIZE = 1, 1


def step(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One step; `x_proj` `[batch, units]` includes the bias."""
    (h,) = carry
    return (jnp.tanh(x_proj + h @ recurrent_kernel),)

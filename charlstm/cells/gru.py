"""The GRU cell: gates (reset, update, candidate), the reset applied after the recurrent matmul."""

import jax
import jax.numpy as jnp

from charlstm.lstm.cell import Carry

GATES, CARRY_SIZE = 3, 1


def step(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One GRU step; `x_proj` `[batch, 3*units]` includes the bias."""
    (h,) = carry
    x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h @ recurrent_kernel, 3, axis=-1)
    r, z = jnp.split(jax.nn.sigmoid(jnp.concatenate([x_r + h_r, x_z + h_z], -1)), 2, -1)
    n = jnp.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)

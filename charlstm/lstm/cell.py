"""The LSTM cell's mathematics, written once for every implementation, and the saved-gates contract.

Gates (input, forget, cell, output), as in cuDNN. One tanh over all four gates gives them all,
as sigmoid(x) = (1 + tanh(x/2)) / 2: on a CPU about twice as fast as separate sigmoid and tanh
calls, and equal in value. The implementations with a hand-written backward pass (xla,
cpu_kernel) save, per step, h, c and those tanh values `[time, batch, 4*units]`; from them
`gate_gradients` gives each step's pre-activation gradient dz, which is also the gradient of x_proj.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Carry = tuple[jax.Array, ...]  # (h, c) for an LSTM, (h,) for a GRU or RNN; each [batch, units].


def gate_scale(units: int, dtype) -> jax.Array:
    """`[4*units]`: 0.5 on the sigmoid gates (i, f, o), 1 on g, as sigmoid(x) = (1 + tanh(x/2)) / 2."""
    half, one = jnp.full(units, 0.5, dtype), jnp.ones(units, dtype)
    return jnp.concatenate([half, half, one, half])


def lstm_step(kernel: jax.Array, carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
    """One step; `x_t` `[batch, 4*units]` includes the bias. Returns the new (h, c) and the tanh of every
    gate (the values the hand-written backward passes save)."""
    h, c = carry
    t = jnp.tanh((x_t + h @ kernel) * gate_scale(kernel.shape[0], x_t.dtype))
    i, f, g, o = jnp.split(t, 4, axis=-1)
    c = (0.5 + 0.5 * f) * c + (0.5 + 0.5 * i) * g
    h = (0.5 + 0.5 * o) * jnp.tanh(c)
    return (h, c), t


def lstm_cell(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One LSTM step without the gates: the cell as the model's other cells are written."""
    return lstm_step(recurrent_kernel, carry, x_proj)[0]


def gate_gradients(dh: jax.Array, dc_next: jax.Array, c: jax.Array, c_prev: jax.Array, gates: jax.Array):
    """One step back: dh reaching this step's h, dc_next its c from later steps -> dz `[batch, 4*units]`
    (the gradient of the gate pre-activations, which is also that of x_proj) and dc for the previous c."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    tanh_c = jnp.tanh(c)
    dc = dc_next + dh * (0.5 + 0.5 * o) * (1 - tanh_c * tanh_c)
    # d tanh(s*z)/dz = s * (1 - t^2); d sigmoid = 0.5 of that, so 0.25 for the gates scaled by 0.5.
    dz = jnp.concatenate(
        [dc * 0.25 * g * (1 - i * i), dc * 0.25 * c_prev * (1 - f * f), dc * (0.5 + 0.5 * i) * (1 - g * g),
         dh * 0.25 * tanh_c * (1 - o * o)],
        axis=-1,
    )
    return dz, dc * (0.5 + 0.5 * f)


def projection_inputs(input_kernel: jax.Array, bias: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """(x, ids) whose input_projection is the layer's x_proj, bias included.

    Character ids `[time, batch]` (already in [0, vocab), see charlstm.lstm.with_edges_settled) give a
    table and the ids: row v of the table is the input kernel's row v plus the bias. Adding the bias to
    the rows before the lookup gives the same sums, and the bias gradient is then a sum over vocabulary
    rows instead of over every time step and window. Features `[time, batch, in]` give their projection
    and None."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return input_kernel + bias, x
    return x @ input_kernel + bias, None


def input_projection(x: jax.Array, ids: jax.Array | None) -> jax.Array:
    """x_proj `[time, batch, 4*units]`: `x` itself, or with character `ids` `[time, batch]` the rows x[ids]
    of the table `x` (the same as one-hot inputs times the table)."""
    return x if ids is None else x[ids]


def with_saved_gates(saving_forward: Callable, inference: Callable, backward: Callable) -> Callable:
    """An LSTM scan (kernel, carry, x, ids) -> (hs, final carry) with a hand-written backward pass.

    `saving_forward(kernel, carry, x, ids)` gives (hs, cs, gates) `[time, batch, ...]`;
    `inference(kernel, carry, x, ids)` the final carry and hs, saving nothing (evaluation, sampling);
    `backward(kernel, carry, hs, cs, gates, d_hs, d_h, d_c, ids, vocab)` gives (dx, d_kernel, dh0, dc0),
    dx being x_proj's gradient, or with ids the table's (`vocab` rows)."""

    @jax.custom_vjp
    def scan(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
        carry, hs = inference(kernel, carry, x, ids)
        return hs, carry

    def forward(kernel, carry, x, ids):
        hs, cs, gates = saving_forward(kernel, carry, x, ids)
        # x's shape and dtype for its cotangent: the table itself with ids (small), else an empty stand-in.
        x_like = x if ids is not None else jnp.zeros(0, x.dtype)
        return (hs, (hs[-1], cs[-1])), (kernel, carry, x_like, ids, hs, cs, gates)

    def backward_pass(residuals, cotangents):
        kernel, carry, x_like, ids, hs, cs, gates = residuals
        d_hs, (d_h, d_c) = cotangents
        dx, d_kernel, d_h0, d_c0 = backward(kernel, carry, hs, cs, gates, d_hs, d_h, d_c, ids, x_like.shape[0])
        d_carry = (d_h0.astype(carry[0].dtype), d_c0.astype(carry[1].dtype))
        d_ids = None if ids is None else np.zeros(ids.shape, jax.dtypes.float0)  # Integers have no gradient.
        return d_kernel.astype(kernel.dtype), d_carry, dx.astype(x_like.dtype), d_ids

    scan.defvjp(forward, backward_pass)
    return scan

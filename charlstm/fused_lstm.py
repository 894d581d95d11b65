"""The LSTM cell and lstm_scan_fused: the cell over time with a hand-written backward pass, for faster training.

Same arguments, results and mathematics as autodiff through `lax.scan` of the
cell (model.scan_cell of model.lstm_cell, which tests compare against). Autodiff through
`lax.scan` saves every intermediate and, per step, runs the recurrent-weight
gradient as a small matmul; here the forward scan keeps only the gate
activations and cell states, the backward scan only carries (dh, dc) and emits
each step's pre-activation gradient dz, and the recurrent-weight gradient is one
large matmul `[units, time*batch] @ [time*batch, 4*units]` afterwards. dz is
also the gradient of `x_proj`, so the caller's input gather and bias
differentiate as before.

The backward pass runs in the inputs' dtype (bfloat16 stays bfloat16, like
autodiff would), except that the recurrent-weight gradient, a sum over
time*batch terms, accumulates in float32 before the cast back.
"""

import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, ...]  # (h, c) for an LSTM, (h,) for a GRU or RNN; each [batch, units].


def _gate_scale(units: int, dtype) -> jax.Array:
    """`[4*units]`: 0.5 on the sigmoid gates (i, f, o), 1 on g, as sigmoid(x) = (1 + tanh(x/2)) / 2."""
    half, one = jnp.full(units, 0.5, dtype), jnp.ones(units, dtype)
    return jnp.concatenate([half, half, one, half])


def lstm_step(kernel: jax.Array, carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
    """One LSTM step, gates (input, forget, cell, output); `x_t` `[batch, 4*units]` includes the bias.

    Returns the new (h, c) and the tanh of every gate (sigmoid(x) = (1 + tanh(x/2)) / 2, so one
    tanh over all four gates gives them all: on CPU about twice as fast as separate sigmoid and
    tanh calls, and equal in value).
    """
    h, c = carry
    t = jnp.tanh((x_t + h @ kernel) * _gate_scale(kernel.shape[0], x_t.dtype))
    i, f, g, o = jnp.split(t, 4, axis=-1)
    c = (0.5 + 0.5 * f) * c + (0.5 + 0.5 * i) * g
    h = (0.5 + 0.5 * o) * jnp.tanh(c)
    return (h, c), t


def _forward(kernel: jax.Array, carry: Carry, xs: jax.Array, save: bool):
    """Scans time-major `xs` `[time, batch, 4*units]`: the final carry and hs `[time, batch, units]`;
    with `save`, also cs `[time, batch, units]` and the tanh of every gate `[time, batch, 4*units]`,
    which the backward pass needs."""

    def step(carry, x_t):
        (h, c), t = lstm_step(kernel, carry, x_t)
        return (h, c), (h, c, t) if save else h

    return jax.lax.scan(step, carry, xs)


@jax.custom_vjp
def lstm_scan_fused(kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> tuple[jax.Array, Carry]:
    """LSTM over time: `x_proj` `[batch, time, 4*units]` (bias included) -> hs `[batch, time, units]`
    and the final (h, c), each `[batch, units]`; gates (i, f, g, o) as in model.lstm_cell."""
    carry, hs = _forward(kernel, carry, jnp.swapaxes(x_proj, 0, 1), save=False)
    return jnp.swapaxes(hs, 0, 1), carry


def _fused_fwd(kernel: jax.Array, carry: Carry, x_proj: jax.Array):
    """The forward pass, saving the gates, hs and cs (time-major) for the backward pass."""
    final, (hs, cs, gates) = _forward(kernel, carry, jnp.swapaxes(x_proj, 0, 1), save=True)
    x_dtype = jnp.zeros(0, x_proj.dtype)  # Remembers x_proj's dtype for its cotangent (mixed inputs).
    return (jnp.swapaxes(hs, 0, 1), final), (kernel, carry, x_dtype, hs, cs, gates)


def _local_derivatives(carry: Carry, cs: jax.Array, gates: jax.Array):
    """Per-step factors that do not depend on the incoming gradient, computed for all steps at once.

    Returns `dz_dc` `[time, batch, 4*units]` (dz of gates i, f, g per unit of dc, and of o per unit
    of dh), `dc_dh` `[time, batch, units]` (dc per unit of dh through h = o * tanh(c)) and the
    forget gates `[time, batch, units]` (dc_prev per unit of dc).
    """
    c_prev = jnp.concatenate([carry[1][None], cs[:-1]])
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    tanh_c = jnp.tanh(cs)
    # d tanh(s*z)/dz = s * (1 - t^2); d sigmoid = 0.5 of that, so 0.25 for the gates scaled by 0.5.
    dz_dc = jnp.concatenate(
        [0.25 * g * (1 - i * i), 0.25 * c_prev * (1 - f * f), (0.5 + 0.5 * i) * (1 - g * g),
         0.25 * tanh_c * (1 - o * o)],
        axis=-1,
    )
    dc_dh = (0.5 + 0.5 * o) * (1 - tanh_c * tanh_c)
    return dz_dc, dc_dh, 0.5 + 0.5 * f


def _fused_bwd(residuals, cotangents):
    """Reverse scan carrying (dh, dc) and emitting dz; then dW as one matmul and dx_proj = dz."""
    kernel, carry, x_dtype, hs, cs, gates = residuals
    d_hs, (d_h, d_c) = cotangents
    dz_dc, dc_dh, forget = _local_derivatives(carry, cs, gates)
    kernel_t = kernel.T

    def step(grads, inputs):
        dh_next, dc_next = grads  # Gradients reaching (h, c) of this step from later ones.
        d_hs_t, dz_dc_t, dc_dh_t, forget_t = inputs
        dh = dh_next + d_hs_t
        dc = dc_next + dh * dc_dh_t
        dz = jnp.concatenate([dc, dc, dc, dh], axis=-1) * dz_dc_t
        return (dz @ kernel_t, dc * forget_t), dz

    (d_h0, d_c0), dz = jax.lax.scan(
        step, (d_h, d_c), (jnp.swapaxes(d_hs, 0, 1), dz_dc, dc_dh, forget), reverse=True
    )
    h_prev = jnp.concatenate([carry[0][None], hs[:-1]]).reshape(-1, kernel.shape[0])
    d_kernel = jax.lax.dot_general(  # [units, time*batch] @ [time*batch, 4*units], summed in float32.
        h_prev, dz.reshape(h_prev.shape[0], -1), (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    d_carry = (d_h0.astype(carry[0].dtype), d_c0.astype(carry[1].dtype))
    return d_kernel.astype(kernel.dtype), d_carry, jnp.swapaxes(dz, 0, 1).astype(x_dtype.dtype)


lstm_scan_fused.defvjp(_fused_fwd, _fused_bwd)

"""The LSTM as an XLA `lax.scan` with a hand-written backward pass: runs on any device, in any dtype.

Autodiff through `lax.scan` saves every intermediate and, per step, runs the recurrent-weight
gradient as a small matmul; here the forward pass keeps only the gate activations and cell states
(charlstm.lstm.cell), the backward pass carries (dh, dc) and emits each step's dz, and the
recurrent-weight gradient is one large matmul `[units, time*batch] @ [time*batch, 4*units]`
afterwards. The backward pass runs in the inputs' dtype (bfloat16 stays bfloat16, as autodiff
would), except that the recurrent-weight and table gradients, sums over time*batch terms,
accumulate in float32 before the cast back.
"""

import jax
import jax.numpy as jnp

from charlstm.lstm.cell import Carry, gate_gradients, input_projection, lstm_step, projection_inputs, with_saved_gates


def _forward(kernel: jax.Array, carry: Carry, xs: jax.Array, save: bool):
    """Scans x_proj `[time, batch, 4*units]`: the final carry and hs `[time, batch, units]`; with `save`,
    (hs, cs, gates): also each step's c and the tanh of every gate `[time, batch, 4*units]`."""

    def step(carry, x_t):
        (h, c), t = lstm_step(kernel, carry, x_t)
        return (h, c), (h, c, t) if save else h

    return jax.lax.scan(step, carry, xs)


def _saving_forward(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    return _forward(kernel, carry, input_projection(x, ids), save=True)[1]


def _inference(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    return _forward(kernel, carry, input_projection(x, ids), save=False)


def _backward(kernel, carry, hs, cs, gates, d_hs, d_h, d_c, ids, vocab: int):
    """A reverse scan carrying (dh, dc) and emitting dz, then dW as one matmul summed in float32; with
    ids, the table's gradient (dz summed by id, in float32) instead of dz."""
    kernel_t = kernel.T

    def step(grads, inputs):
        dh_next, dc_next = grads  # Gradients reaching (h, c) of this step from later ones.
        d_hs_t, c_t, c_prev_t, gates_t = inputs
        dz, dc_prev = gate_gradients(dh_next + d_hs_t, dc_next, c_t, c_prev_t, gates_t)
        return (dz @ kernel_t, dc_prev), dz

    c_prev = jnp.concatenate([carry[1][None], cs[:-1]])
    (d_h0, d_c0), dz = jax.lax.scan(step, (d_h, d_c), (d_hs, cs, c_prev, gates), reverse=True)
    h_prev = jnp.concatenate([carry[0][None], hs[:-1]]).reshape(-1, kernel.shape[0])
    d_kernel = jax.lax.dot_general(  # [units, time*batch] @ [time*batch, 4*units], summed in float32.
        h_prev, dz.reshape(h_prev.shape[0], -1), (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    if ids is not None:
        dz = jnp.zeros((vocab, dz.shape[-1]), jnp.float32).at[ids].add(dz.astype(jnp.float32))
    return dz, d_kernel, d_h0, d_c0


scan = with_saved_gates(_saving_forward, _inference, _backward)


def lstm_scan(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array):
    """charlstm.lstm's signature: ids `[time, batch]` or features `[time, batch, in]` -> (hs, (h, c))."""
    return scan(recurrent_kernel, carry, *projection_inputs(input_kernel, bias, x))


def unavailable(dtype) -> str | None:
    """Runs anywhere, in any dtype."""
    return None

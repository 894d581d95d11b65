"""The LSTM cell and lstm_scan_fused: the cell over time with a hand-written backward pass, for faster training.

Same arguments, results and mathematics as autodiff through `lax.scan` of the
cell (model.lstm_scan_autodiff, which tests compare against). Arrays are
time-major `[time, batch, ...]`, so each step reads and writes contiguous rows.
Autodiff through `lax.scan` saves every intermediate and, per step, runs the
recurrent-weight gradient as a small matmul; here the forward pass keeps only the
gate activations and cell states, the backward pass only carries (dh, dc) and
emits each step's pre-activation gradient dz, and the recurrent-weight gradient is
one large matmul `[units, time*batch] @ [time*batch, 4*units]` afterwards. dz is
also the gradient of x_proj; for the first layer, whose x_proj is rows of a table
picked by character id, the table's gradient is dz summed by id.

Two implementations: on one CPU device in float32, the compiled kernel of
charlstm.native_lstm (each time step one OpenBLAS matmul and one vectorised loop,
no per-step dispatch, the batch split over the cores; the table lookup and its
gradient inside); elsewhere (GPU, TPU, several devices, bfloat16, or where the
kernel did not build), `lax.scan` in XLA. (On one CUDA GPU in float32 the
model runs its LSTM layers through charlstm.cudnn_lstm instead of this.) The
XLA backward pass runs in the inputs' dtype (bfloat16 stays bfloat16, like
autodiff would), except that the recurrent-weight and table gradients, sums
over time*batch terms, accumulate in float32 before the cast back.
"""

import jax
import jax.numpy as jnp
import numpy as np

from charlstm import native_lstm

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
    """Scans `xs` `[time, batch, 4*units]` in XLA: the final carry and hs `[time, batch, units]`; with
    `save`, (hs, cs, gates): also each step's c and the tanh of every gate `[time, batch, 4*units]`."""

    def step(carry, x_t):
        (h, c), t = lstm_step(kernel, carry, x_t)
        return (h, c), (h, c, t) if save else h

    return jax.lax.scan(step, carry, xs)


def _use_native(*arrays: jax.Array) -> bool:
    """Whether the compiled CPU kernel can serve: float32 only, one device (XLA cannot split the kernel's
    work over devices, so data-parallel runs keep the XLA scan), and the kernel must have built."""
    return all(x.dtype == jnp.float32 for x in arrays) and jax.device_count() == 1 and native_lstm.available()


def _kernel_or_scan(native, scan, *arguments):
    """native(*arguments) where the compiled kernel can serve and the platform is CPU, else scan(*arguments)."""
    if not _use_native(*jax.tree.leaves(arguments)):
        return scan(*arguments)
    return jax.lax.platform_dependent(*arguments, cpu=native, default=scan)


def input_projection(x: jax.Array, ids: jax.Array | None) -> jax.Array:
    """x_proj `[time, batch, 4*units]`: `x` itself, or with character `ids` `[time, batch]` the rows x[ids]
    of the table `x` `[vocab, 4*units]` (the same as one-hot inputs times the table)."""
    return x if ids is None else x[ids]


def _saving_forward(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    """(hs, cs, gates) for the backward pass: the compiled kernel on CPU where it can serve, else XLA."""
    scan = lambda kernel, carry, x: _forward(kernel, carry, input_projection(x, ids), save=True)[1]
    native = lambda kernel, carry, x: native_lstm.forward(kernel, *carry, x, ids)
    return _kernel_or_scan(native, scan, kernel, carry, x)


def _inference(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None) -> tuple[Carry, jax.Array]:
    """The final carry and hs without saving anything: the compiled kernel on CPU where it can serve, else
    the XLA scan."""
    scan = lambda kernel, carry, x: _forward(kernel, carry, input_projection(x, ids), save=False)

    def native(kernel, carry, x):
        hs, c = native_lstm.inference(kernel, *carry, x, ids)
        return (hs[-1], c), hs

    return _kernel_or_scan(native, scan, kernel, carry, x)


@jax.custom_vjp
def lstm_scan_fused(
    kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None
) -> tuple[jax.Array, Carry]:
    """LSTM over time: x_proj = input_projection(x, ids) `[time, batch, 4*units]` (bias included) ->
    hs `[time, batch, units]` and the final (h, c), each `[batch, units]`; gates (i, f, g, o) as in
    model.lstm_cell. With character `ids` the compiled kernel gathers the table's rows itself and sums
    their gradient by id, so x_proj and its gradient are never written out whole.

    Without differentiation (evaluation, sampling) nothing is saved for a backward pass."""
    carry, hs = _inference(kernel, carry, x, ids)
    return hs, carry


def _fused_fwd(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    """The forward pass, saving hs, cs and the gates for the backward pass."""
    hs, cs, gates = _saving_forward(kernel, carry, x, ids)
    # x's shape and dtype for its cotangent: the table itself with ids (small), else an empty stand-in.
    x_like = x if ids is not None else jnp.zeros(0, x.dtype)
    return (hs, (hs[-1], cs[-1])), (kernel, carry, x_like, ids, hs, cs, gates)


def _gate_gradients(dh: jax.Array, dc_next: jax.Array, c: jax.Array, c_prev: jax.Array, gates: jax.Array):
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


def _scan_backward(kernel, carry, hs, cs, gates, d_hs, d_h, d_c):
    """XLA's backward pass: a reverse scan carrying (dh, dc) and emitting dz, then dW as one matmul
    `[units, time*batch] @ [time*batch, 4*units]` summed in float32. Returns (dz, dW, dh0, dc0)."""
    kernel_t = kernel.T

    def step(grads, inputs):
        dh_next, dc_next = grads  # Gradients reaching (h, c) of this step from later ones.
        d_hs_t, c_t, c_prev_t, gates_t = inputs
        dz, dc_prev = _gate_gradients(dh_next + d_hs_t, dc_next, c_t, c_prev_t, gates_t)
        return (dz @ kernel_t, dc_prev), dz

    c_prev = jnp.concatenate([carry[1][None], cs[:-1]])
    (d_h0, d_c0), dz = jax.lax.scan(step, (d_h, d_c), (d_hs, cs, c_prev, gates), reverse=True)
    h_prev = jnp.concatenate([carry[0][None], hs[:-1]]).reshape(-1, kernel.shape[0])
    d_kernel = jax.lax.dot_general(  # [units, time*batch] @ [time*batch, 4*units], summed in float32.
        h_prev, dz.reshape(h_prev.shape[0], -1), (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    return dz, d_kernel, d_h0, d_c0


def _fused_bwd(residuals, cotangents):
    """dW, d(h0, c0) and dx: dz (x_proj's gradient), or with ids the table's, dz summed by id. From the
    compiled kernel on CPU where it can serve, else XLA."""
    kernel, carry, x_like, ids, hs, cs, gates = residuals
    d_hs, (d_h, d_c) = cotangents

    def scan(*arguments):
        dz, *grads = _scan_backward(*arguments)
        if ids is None:
            return dz, *grads
        return jnp.zeros(x_like.shape, jnp.float32).at[ids].add(dz.astype(jnp.float32)), *grads

    def native(kernel, carry, *rest):
        dz, d_table, *grads = native_lstm.backward(kernel, *carry, *rest, ids, x_like.shape[0])
        return dz if ids is None else d_table, *grads

    dx, d_kernel, d_h0, d_c0 = _kernel_or_scan(native, scan, kernel, carry, hs, cs, gates, d_hs, d_h, d_c)
    d_carry = (d_h0.astype(carry[0].dtype), d_c0.astype(carry[1].dtype))
    d_ids = None if ids is None else np.zeros(ids.shape, jax.dtypes.float0)  # Integers have no gradient.
    return d_kernel.astype(kernel.dtype), d_carry, dx.astype(x_like.dtype), d_ids


lstm_scan_fused.defvjp(_fused_fwd, _fused_bwd)

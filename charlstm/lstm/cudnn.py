"""The LSTM on one NVIDIA GPU through cuDNN (`jax.experimental.rnn.lstm`): the whole sequence as one
library call for the forward pass and one for the backward pass, the input projection included.

cuDNN's LSTM has the same gates in the same order (charlstm.lstm.cell) and the same mathematics; its
weights are ours transposed (W_ih `[4*units, in]`, W_hh `[4*units, units]`) with two biases (ours and
zeros), packed into one flat array. jax's binding is float32 only and batch-major; the layer stays
time-major, so the call transposes in and out.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from charlstm.lstm.cell import Carry


def unavailable(dtype) -> str | None:
    """Why cuDNN cannot run an LSTM layer here on arrays of `dtype`, or None when it can. jax's binding
    rejects bfloat16 matmuls, so it also follows jax's default matmul precision ('highest' or
    'float32' turn TF32 off, as for XLA's own dots)."""
    if jax.default_backend() != "gpu" or "cuda" not in jax.devices()[0].client.platform_version.lower():
        return f"it needs an NVIDIA GPU with CUDA (the default backend is {jax.default_backend()})"
    if jax.device_count() != 1:
        return f"jax's cuDNN LSTM cannot be split over devices, and there are {jax.device_count()}"
    if dtype != jnp.float32:
        return f"jax's cuDNN LSTM computes in float32 only, not {dtype}"
    if jax.config.jax_default_matmul_precision in ("default", "bfloat16"):
        return "jax's default matmul precision asks for bfloat16 matmuls, which its cuDNN LSTM rejects"
    return None


def packed_weights(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """One layer's weights in cuDNN's flat layout: W_ih, W_hh (row-major), b_ih, b_hh (zeros)."""
    parts = [input_kernel.T.ravel(), recurrent_kernel.T.ravel(), bias, jnp.zeros_like(bias)]
    return jnp.concatenate(parts)


def lstm_scan(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array):
    """charlstm.lstm's signature: ids `[time, batch]` (one-hot rows, so the input kernel acts as a table)
    or features `[time, batch, in]` -> hs `[time, batch, units]` and the final (h, c)."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = jax.nn.one_hot(x, input_kernel.shape[0], dtype=input_kernel.dtype)
    (h, c), (time, batch, inputs) = carry, x.shape
    hs, h_n, c_n = rnn.lstm(
        jnp.swapaxes(x, 0, 1),
        h[None],
        c[None],
        packed_weights(input_kernel, recurrent_kernel, bias),
        jnp.full((batch,), time, jnp.int32),
        input_size=inputs,
        hidden_size=recurrent_kernel.shape[0],
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
    )
    return jnp.swapaxes(hs, 0, 1), (h_n[0], c_n[0])

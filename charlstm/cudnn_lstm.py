"""The LSTM layer on NVIDIA GPUs through cuDNN (`jax.experimental.rnn.lstm`): the whole sequence as one
library call for the forward pass and one for the backward pass, the input projection included.

cuDNN's LSTM has model.lstm_cell's gates in the same order (input, forget, cell, output) and the same
mathematics; its weights are ours transposed (W_ih `[4*units, in]`, W_hh `[4*units, units]`) with two
biases (ours and zeros), packed into one flat array. jax's binding is float32 only and batch-major; the
layer stays time-major, so the call transposes in and out. Where it does not serve (CPU, TPU, ROCm,
bfloat16, several devices) the layer runs fused_lstm.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from charlstm.fused_lstm import Carry


def available() -> bool:
    """Whether the default backend is one CUDA GPU (jax's cuDNN LSTM cannot be split over devices)."""
    if jax.default_backend() != "gpu" or jax.device_count() != 1:
        return False
    return "cuda" in jax.devices()[0].client.platform_version.lower()


def serves(*arrays: jax.Array) -> bool:
    """Whether cuDNN runs an LSTM layer on `arrays`: float32 on one CUDA GPU, unless jax's default matmul
    precision asks for bfloat16 matmuls, which jax's binding rejects. (It follows that setting itself:
    'highest' or 'float32' turns TF32 off, as for XLA's own dots.)"""
    bfloat16_matmuls = jax.config.jax_default_matmul_precision in ("default", "bfloat16")
    return all(x.dtype == jnp.float32 for x in arrays) and not bfloat16_matmuls and available()


def packed_weights(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """One layer's weights in cuDNN's flat layout: W_ih, W_hh (row-major), b_ih, b_hh (zeros)."""
    parts = [input_kernel.T.ravel(), recurrent_kernel.T.ravel(), bias, jnp.zeros_like(bias)]
    return jnp.concatenate(parts)


def lstm_scan(
    input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array
) -> tuple[jax.Array, Carry]:
    """Time-major, like fused_lstm.lstm_scan_fused: character ids `[time, batch]` (one-hot rows, so the
    input kernel acts as a table) or features `[time, batch, in]` -> hs `[time, batch, units]` and the
    final (h, c), each `[batch, units]`."""
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

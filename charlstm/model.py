"""CharLSTM: stacked LSTM layers over character ids and a Dense head giving logits.

The first layer's input kernel is indexed by character id, which equals a
one-hot input times that kernel without building one-hot tensors. The input
projection of a whole sequence is computed before the time scan, so each
scan step is one `[batch, units] @ [units, 4*units]` matmul.
"""

import jax
import jax.numpy as jnp
from flax import nnx

# One (h, c) pair per layer, each [batch, units].
State = tuple[tuple[jax.Array, jax.Array], ...]


def lstm_cell(
    recurrent_kernel: jax.Array, carry: tuple[jax.Array, jax.Array], x_proj: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One LSTM step; `x_proj` `[batch, 4*units]` is the input projection plus bias."""
    h, c = carry
    units = h.shape[-1]
    # sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh over all four gates is about
    # twice as fast on CPU as separate sigmoid and tanh calls, and equal in value.
    half = jnp.full(units, 0.5)
    scale = jnp.concatenate([half, half, jnp.ones(units), half])
    i, f, g, o = jnp.split(jnp.tanh((x_proj + h @ recurrent_kernel) * scale), 4, axis=-1)
    c = (0.5 + 0.5 * f) * c + (0.5 + 0.5 * i) * g
    h = (0.5 + 0.5 * o) * jnp.tanh(c)
    return h, c


def lstm_scan(
    recurrent_kernel: jax.Array, carry: tuple[jax.Array, jax.Array], x_proj: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs the cell over time: `x_proj` `[batch, time, 4*units]` -> hs `[batch, time, units]`."""

    def step(carry, x_t):
        carry = lstm_cell(recurrent_kernel, carry, x_t)
        return carry, carry[0]

    carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(x_proj, 0, 1))
    return jnp.swapaxes(hs, 0, 1), carry


class LSTMLayer(nnx.Module):
    """One LSTM layer with fused gates in the order (input, forget, cell, output)."""

    def __init__(self, in_features: int, units: int, *, rngs: nnx.Rngs):
        self.units = units
        self.input_kernel = nnx.Param(
            nnx.initializers.glorot_uniform()(rngs.params(), (in_features, 4 * units))
        )
        self.recurrent_kernel = nnx.Param(
            nnx.initializers.orthogonal()(rngs.params(), (units, 4 * units))
        )
        # Forget-gate bias 1: the cell remembers by default early in training.
        self.bias = nnx.Param(jnp.zeros(4 * units).at[units : 2 * units].set(1.0))

    def project(self, x: jax.Array) -> jax.Array:
        """Input projection plus bias: ids `[batch, time]` or features `[batch, time, in]`."""
        if jnp.issubdtype(x.dtype, jnp.integer):
            return self.input_kernel[...][x] + self.bias[...]
        return x @ self.input_kernel[...] + self.bias[...]

    def __call__(self, x: jax.Array, carry: tuple[jax.Array, jax.Array]):
        return lstm_scan(self.recurrent_kernel[...], carry, self.project(x))


class CharLSTM(nnx.Module):
    """Next-character model: ids `[batch, time]` -> logits `[batch, time, vocab]`."""

    def __init__(self, vocab_size: int, units: int, num_layers: int, *, rngs: nnx.Rngs):
        self.units = units
        self.layers = nnx.List(
            [LSTMLayer(vocab_size if i == 0 else units, units, rngs=rngs) for i in range(num_layers)]
        )
        self.head = nnx.Linear(units, vocab_size, rngs=rngs)

    def initial_state(self, batch_size: int) -> State:
        zeros = jnp.zeros((batch_size, self.units))
        return tuple((zeros, zeros) for _ in self.layers)

    def features(self, ids: jax.Array, state: State | None = None) -> tuple[jax.Array, State]:
        """Top-layer hidden states `[batch, time, units]` and the final state."""
        state = self.initial_state(ids.shape[0]) if state is None else state
        x, new_state = ids, []
        for layer, carry in zip(self.layers, state):
            x, carry = layer(x, carry)
            new_state.append(carry)
        return x, tuple(new_state)

    def __call__(self, ids: jax.Array, state: State | None = None) -> tuple[jax.Array, State]:
        hs, state = self.features(ids, state)
        return self.head(hs), state

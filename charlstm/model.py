"""CharLSTM: stacked recurrent layers (LSTM, GRU or plain RNN) over character ids and a Dense head.

The first layer's input kernel is indexed by character id, which equals a
one-hot input times that kernel without building one-hot tensors (or, with
`embed_dim`, a learned embedding feeds it). The input projection of a whole
sequence is computed before the time scan, so each scan step is one
`[batch, units] @ [units, gates*units]` matmul. LSTM layers run cuDNN on one
CUDA GPU in float32 (charlstm.cudnn_lstm), else lstm_scan below.

Dropout is variational (one mask per sequence, shared over time) on each
layer's output, and DropConnect on the recurrent kernel (`weight_dropout`,
one mask per batch); both act only when a dropout key is given, i.e. in
training, never in evaluation or sampling.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from charlstm import cudnn_lstm
from charlstm.fused_lstm import Carry, input_projection, lstm_scan_fused, lstm_step

# Per layer a Carry: (h, c) for an LSTM, (h,) for a GRU or RNN; each [batch, units].
State = tuple[Carry, ...]


def lstm_cell(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One LSTM step (fused_lstm.lstm_step); `x_proj` `[batch, 4*units]` includes the bias."""
    return lstm_step(recurrent_kernel, carry, x_proj)[0]


def gru_cell(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One GRU step, gates (reset, update, candidate), reset applied after the recurrent matmul."""
    (h,) = carry
    x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h @ recurrent_kernel, 3, axis=-1)
    r, z = jnp.split(jax.nn.sigmoid(jnp.concatenate([x_r + h_r, x_z + h_z], -1)), 2, -1)
    n = jnp.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)


def rnn_cell(recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> Carry:
    """One Elman RNN step: h = tanh(x W + h U + b)."""
    (h,) = carry
    return (jnp.tanh(x_proj + h @ recurrent_kernel),)


# Cell name -> (gates per unit, step function, carry size).
CELLS = {"lstm": (4, lstm_cell, 2), "gru": (3, gru_cell, 1), "rnn": (1, rnn_cell, 1)}


def scan_cell(cell, recurrent_kernel: jax.Array, carry: Carry, x_proj: jax.Array) -> tuple[jax.Array, Carry]:
    """Runs `cell` over time: `x_proj` `[time, batch, gates*units]` -> hs `[time, batch, units]`."""

    def step(carry, x_t):
        carry = cell(recurrent_kernel, carry, x_t)
        return carry, carry[0]

    carry, hs = jax.lax.scan(step, carry, x_proj)
    return hs, carry


def lstm_scan_autodiff(
    recurrent_kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None
) -> tuple[jax.Array, Carry]:
    """lstm_scan's reference: autodiff through scan_cell(lstm_cell, ...) of input_projection(x, ids)."""
    return scan_cell(lstm_cell, recurrent_kernel, carry, input_projection(x, ids))


# The LSTM layers' scan off cuDNN: a hand-written backward pass with the same values as
# lstm_scan_autodiff (tests/test_fused_lstm.py), run by the compiled CPU kernel where it serves.
lstm_scan = lstm_scan_fused


def dropout(key: jax.Array, x: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Inverted dropout with a mask of `shape` broadcast over `x`."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class RecurrentLayer(nnx.Module):
    """One recurrent layer with fused gates: input kernel, recurrent kernel, bias."""

    def __init__(self, cell: str, in_features: int, units: int, *, rngs: nnx.Rngs):
        gates, _, _ = CELLS[cell]
        self.cell, self.units = cell, units
        self.input_kernel = nnx.Param(
            nnx.initializers.glorot_uniform()(rngs.params(), (in_features, gates * units))
        )
        self.recurrent_kernel = nnx.Param(
            nnx.initializers.orthogonal()(rngs.params(), (units, gates * units))
        )
        bias = jnp.zeros(gates * units)
        if cell == "lstm":  # Forget-gate bias 1: the cell remembers by default early in training.
            bias = bias.at[units : 2 * units].set(1.0)
        self.bias = nnx.Param(bias)

    def initial_carry(self, batch_size: int) -> Carry:
        return (jnp.zeros((batch_size, self.units)),) * CELLS[self.cell][2]

    def inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(x, ids) whose fused_lstm.input_projection is this layer's x_proj (bias included).

        Character ids `[time, batch]` give the table (input kernel plus bias: row v projects id v) and
        the ids: adding the bias to the kernel's rows before the lookup gives the same sums, and the
        bias gradient is then a sum over vocabulary rows instead of over every time step and window.
        Features `[time, batch, in]` give their projection and None."""
        if jnp.issubdtype(x.dtype, jnp.integer):
            return self.input_kernel[...] + self.bias[...], x
        return x @ self.input_kernel[...] + self.bias[...], None

    def __call__(self, x: jax.Array, carry: Carry, recurrent_kernel: jax.Array | None = None):
        """Time-major: hs `[time, batch, units]` and the final carry; `recurrent_kernel` overrides (DropConnect)."""
        kernel = self.recurrent_kernel[...] if recurrent_kernel is None else recurrent_kernel
        if self.cell != "lstm":
            return scan_cell(CELLS[self.cell][1], kernel, carry, input_projection(*self.inputs(x)))
        if cudnn_lstm.serves(kernel, *carry):
            return cudnn_lstm.lstm_scan(self.input_kernel[...], kernel, self.bias[...], carry, x)
        return lstm_scan(kernel, carry, *self.inputs(x))  # The CPU kernel gathers the table's rows by id itself.


class CharLSTM(nnx.Module):
    """Next-character model: ids `[batch, time]` -> logits `[batch, time, vocab]`."""

    def __init__(
        self,
        vocab_size: int,
        units: int,
        num_layers: int,
        *,
        cell: str = "lstm",
        embed_dim: int = 0,
        dropout: float = 0.0,
        weight_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.dropout, self.weight_dropout = dropout, weight_dropout
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs) if embed_dim else None
        first_in = embed_dim or vocab_size
        self.layers = nnx.List(
            [RecurrentLayer(cell, first_in if i == 0 else units, units, rngs=rngs) for i in range(num_layers)]
        )
        self.head = nnx.Linear(units, vocab_size, rngs=rngs)

    def initial_state(self, batch_size: int) -> State:
        return tuple(layer.initial_carry(batch_size) for layer in self.layers)

    def features(
        self, ids: jax.Array, state: State | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        """Top-layer outputs, time-major `[time, batch, units]` (dropped out when training), and the final
        state for ids `[batch, time]`. Time-major, the scans need no transposes of large arrays."""
        state = self.initial_state(ids.shape[0]) if state is None else state
        time_major = jnp.swapaxes(ids, 0, 1)  # ids `[batch, time]`, or one-hot rows `[batch, time, vocab]`.
        x = time_major if self.embed is None else self.embed(time_major)
        training = dropout_key is not None
        keys = jax.random.split(dropout_key, 2 * len(self.layers)) if training else [None] * (2 * len(self.layers))
        new_state = []
        for i, (layer, carry) in enumerate(zip(self.layers, state)):
            kernel = None
            if training and self.weight_dropout:
                w = layer.recurrent_kernel[...]
                kernel = dropout(keys[2 * i], w, self.weight_dropout, w.shape)
            x, carry = layer(x, carry, kernel)
            if training and self.dropout:
                x = dropout(keys[2 * i + 1], x, self.dropout, (1, *x.shape[1:]))
            new_state.append(carry)
        return x, tuple(new_state)

    def __call__(
        self, ids: jax.Array, state: State | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        """Logits `[batch, time, vocab]` for ids `[batch, time]`, and the final state."""
        hs, state = self.features(ids, state, dropout_key)
        return jnp.swapaxes(self.head(hs), 0, 1), state

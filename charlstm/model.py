"""CharLSTM: stacked recurrent layers (a cell of charlstm.cells) over character ids and a Dense head.

The first layer's input kernel is indexed by character id, which equals a
one-hot input times that kernel without building one-hot tensors (or, with
`embed_dim`, a learned embedding feeds it). The input projection of a whole
sequence is computed before the time scan, so each scan step is one
`[batch, units] @ [units, gates*units]` matmul. LSTM layers run the implementation
that `lstm_impl` names, or the fastest that can run here ('auto'; charlstm.lstm).

Dropout is variational (one mask per sequence, shared over time) on each
layer's output, and DropConnect on the recurrent kernel (`weight_dropout`,
one mask per batch); both act only when a dropout key is given, i.e. in
training, never in evaluation or sampling.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from charlstm import cells, data
from charlstm.lstm.autodiff import scan_cell
from charlstm.lstm.cell import Carry

# Per layer a Carry: (h, c) for an LSTM, (h,) for a GRU or RNN; each [batch, units].
RecurrentState = tuple[Carry, ...]
# The model.* fields that, with the vocabulary's size, decide the weights' shapes and what they mean.
SHAPE_FIELDS = ("cell", "units", "num_layers", "embed_dim")


def dropout(key: jax.Array, x: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Inverted dropout with a mask of `shape` broadcast over `x`."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class RecurrentLayer(nnx.Module):
    """One recurrent layer with fused gates: input kernel, recurrent kernel, bias."""

    def __init__(self, cell: str, in_features: int, units: int, *, lstm_impl: str = "auto", rngs: nnx.Rngs):
        gates = cells.get(cell).gates
        self.cell, self.units, self.lstm_impl = cell, units, lstm_impl
        self.input_kernel = nnx.Param(
            nnx.initializers.glorot_uniform()(rngs.params(), (in_features, gates * units))
        )
        self.recurrent_kernel = nnx.Param(
            nnx.initializers.orthogonal()(rngs.params(), (units, gates * units))
        )
        self.bias = nnx.Param(cells.get(cell).initial_bias(units, gates))

    def initial_carry(self, batch_size: int) -> Carry:
        return (jnp.zeros((batch_size, self.units)),) * cells.get(self.cell).carry_size

    def __call__(self, x: jax.Array, carry: Carry, recurrent_kernel: jax.Array | None = None):
        """Time-major: character ids `[time, batch]` or features `[time, batch, in]` -> hs
        `[time, batch, units]` and the final carry; `recurrent_kernel` overrides (DropConnect)."""
        kernel = self.recurrent_kernel[...] if recurrent_kernel is None else recurrent_kernel
        input_kernel, bias, cell = self.input_kernel[...], self.bias[...], cells.get(self.cell)
        if cell.scan is not None:
            return cell.scan(self.lstm_impl, input_kernel, kernel, bias, carry, x)
        x_proj = (input_kernel + bias)[x] if jnp.issubdtype(x.dtype, jnp.integer) else x @ input_kernel + bias
        return scan_cell(cell.step, kernel, carry, x_proj)


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
        lstm_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.dropout, self.weight_dropout = dropout, weight_dropout
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs) if embed_dim else None
        first_in = embed_dim or vocab_size
        self.layers = nnx.List([
            RecurrentLayer(cell, first_in if i == 0 else units, units, lstm_impl=lstm_impl, rngs=rngs)
            for i in range(num_layers)
        ])
        self.head = nnx.Linear(units, vocab_size, rngs=rngs)

    def initial_state(self, batch_size: int) -> RecurrentState:
        return tuple(layer.initial_carry(batch_size) for layer in self.layers)

    def features(
        self, ids: jax.Array, state: RecurrentState | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, RecurrentState]:
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
        self, ids: jax.Array, state: RecurrentState | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, RecurrentState]:
        """Logits `[batch, time, vocab]` for ids `[batch, time]`, and the final state."""
        hs, state = self.features(ids, state, dropout_key)
        return jnp.swapaxes(self.head(hs), 0, 1), state


def create_model(config: ml_collections.ConfigDict, vocab_size: int) -> CharLSTM:
    """The model `config.model` describes, initialised from `config.seed`."""
    m = config.model
    return CharLSTM(
        vocab_size, m.units, m.num_layers, cell=m.cell, embed_dim=m.embed_dim, dropout=m.dropout,
        weight_dropout=m.weight_dropout, lstm_impl=m.lstm_impl, rngs=nnx.Rngs(config.seed),
    )


def train_step_flops(config: ml_collections.ConfigDict, vocab_size: int) -> float:
    """Matmul FLOPs of one train step (the benchmark's GFLOP/s): the forward pass's input projections
    (none for one-hot input, a gather), recurrent matmuls and head, times 3, as the backward pass
    costs about twice the forward."""
    m, batch, length = config.model, config.train.batch_size, config.data.seq_length
    gates = cells.get(m.cell).gates
    inputs = [m.embed_dim] + [m.units] * (m.num_layers - 1)
    per_position = sum(2 * (n_in + m.units) * gates * m.units for n_in in inputs)
    head_positions = data.targets_per_window(length, config.train.objective)
    return 3 * batch * (length * per_position + head_positions * 2 * m.units * vocab_size)


def vocab_axes(params: dict) -> dict[tuple, int]:
    """The axis indexed by character id of each parameter that has one, by its path in split_model's dict:
    the input table's rows (the embedding, or the first layer's input kernel when the input is one-hot) and
    the head's outputs."""
    table = ("embed", "embedding") if "embed" in params else ("layers", 0, "input_kernel")
    return {table: 0, ("head", "kernel"): 1, ("head", "bias"): 0}


def split_model(model: CharLSTM) -> tuple[nnx.GraphDef, dict]:
    """The static graph and the parameters as a pure dict of arrays (what jit and checkpoints take)."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)

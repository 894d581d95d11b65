"""CharLSTM: stacked recurrent layers (a cell of charlstm.cells) over character ids and a Dense head.

The first layer's input kernel is indexed by character id, which equals a
one-hot input times that kernel without building one-hot tensors (or, with
`embed_dim`, a learned embedding feeds it). The input projection of a whole
sequence is computed before the time scan, so each scan step is one
`[batch, units] @ [units, gates*units]` matmul. LSTM layers run the implementation
that `lstm_impl` names, or the fastest that can run here ('auto'; charlstm.lstm).

Dropout is variational (one mask per sequence, shared over time) on each
layer's output, DropConnect on the recurrent kernel (`weight_dropout`, one
mask per batch), and embedding dropout (`embed_dropout`: whole characters'
rows of the input table dropped, one mask per batch); all act only when a
dropout key is given, i.e. in training, never in evaluation or sampling.
With `tie_weights` the head's kernel is the input embedding (TiedHead).
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
SHAPE_FIELDS = ("cell", "units", "num_layers", "embed_dim", "tie_weights", "mogrifier_rounds")


def dropout(key: jax.Array, x: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Inverted dropout with a mask of `shape` broadcast over `x`."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def drop_rows(key: jax.Array, table: jax.Array, rate: float) -> jax.Array:
    """Embedding dropout: whole rows (characters) of `table` `[vocab, features]` zeroed, the rest scaled."""
    return dropout(key, table, rate, (table.shape[0], 1))


class RecurrentLayer(nnx.Module):
    """One recurrent layer with fused gates: input kernel, recurrent kernel, bias."""

    def __init__(
        self, cell: str, in_features: int, units: int, *, lstm_impl: str = "auto", rounds: int = 0, rngs: nnx.Rngs
    ):
        gates = cells.get(cell).gates
        self.cell, self.units, self.lstm_impl = cell, units, lstm_impl
        self.input_kernel = nnx.Param(
            nnx.initializers.glorot_uniform()(rngs.params(), (in_features, gates * units))
        )
        self.recurrent_kernel = nnx.Param(
            nnx.initializers.orthogonal()(rngs.params(), (units, gates * units))
        )
        self.bias = nnx.Param(cells.get(cell).initial_bias(units, gates))
        # The kernels of the cell's rounds (the mogrifier's), made after the others: none, and no key drawn, at 0.
        kernels = cells.get(cell).round_kernels(in_features, units, rounds, rngs) if rounds else []
        self.rounds = nnx.List([nnx.Param(k) for k in kernels]) if kernels else None

    def initial_carry(self, batch_size: int) -> Carry:
        return (jnp.zeros((batch_size, self.units)),) * cells.get(self.cell).carry_size

    def __call__(
        self, x: jax.Array, carry: Carry, recurrent_kernel: jax.Array | None = None,
        input_kernel: jax.Array | None = None,
    ):
        """Time-major: character ids `[time, batch]` or features `[time, batch, in]` -> hs
        `[time, batch, units]` and the final carry; `recurrent_kernel` (DropConnect) and `input_kernel`
        (embedding dropout of the one-hot table) override the layer's own."""
        kernel = self.recurrent_kernel[...] if recurrent_kernel is None else recurrent_kernel
        input_kernel = self.input_kernel[...] if input_kernel is None else input_kernel
        bias, cell = self.bias[...], cells.get(self.cell)
        if cell.scan is not None:
            rounds = [] if self.rounds is None else [k[...] for k in self.rounds]
            return cell.scan(self.lstm_impl, input_kernel, kernel, bias, carry, x, *rounds)
        x_proj = (input_kernel + bias)[x] if jnp.issubdtype(x.dtype, jnp.integer) else x @ input_kernel + bias
        return scan_cell(cell.step, kernel, carry, x_proj)


class TiedHead(nnx.Module):
    """The head tied to the input embedding E `[vocab, embed_dim]`: logits = h E^T + b, or (h P) E^T + b with a
    learned projection P `[units, embed_dim]` when the sizes differ (Merity et al. 2018). One array, E, is
    both the input table and the output kernel, so it gets the gradients of both."""

    def __init__(self, units: int, embed_dim: int, vocab_size: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()  # As nnx.Linear's kernel.
        self.projection = nnx.Param(init(rngs.params(), (units, embed_dim))) if units != embed_dim else None
        self.bias = nnx.Param(jnp.zeros(vocab_size))

    def __call__(self, hs: jax.Array, embedding: jax.Array) -> jax.Array:
        """Logits `[..., vocab]` of outputs hs `[..., units]`."""
        x = hs if self.projection is None else hs @ self.projection[...]
        return x @ embedding.T + self.bias[...]


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
        embed_dropout: float = 0.0,
        tie_weights: bool = False,
        mogrifier_rounds: int = 0,
        lstm_impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.vocab_size, self.dropout, self.weight_dropout = vocab_size, dropout, weight_dropout
        self.embed_dropout, self.tie_weights = embed_dropout, tie_weights
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs) if embed_dim else None
        first_in = embed_dim or vocab_size
        self.layers = nnx.List([
            RecurrentLayer(
                cell, first_in if i == 0 else units, units, lstm_impl=lstm_impl, rounds=mogrifier_rounds, rngs=rngs
            )
            for i in range(num_layers)
        ])
        if tie_weights:
            self.head = TiedHead(units, embed_dim, vocab_size, rngs=rngs)
        else:
            self.head = nnx.Linear(units, vocab_size, rngs=rngs)

    def initial_state(self, batch_size: int) -> RecurrentState:
        return tuple(layer.initial_carry(batch_size) for layer in self.layers)

    def first_input(self, ids: jax.Array, key: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        """The first layer's input for time-major ids `[time, batch]`: the ids themselves (its input kernel is
        then the one-hot table) or their embeddings `[time, batch, embed_dim]`; and with an embedding-dropout
        `key`, the input kernel with whole characters' rows dropped for it (None: its own)."""
        if key is None:
            return (ids if self.embed is None else self.embed(ids)), None
        if self.embed is None:
            return ids, drop_rows(key, self.layers[0].input_kernel[...], self.embed_dropout)
        return jnp.take(drop_rows(key, self.embed.embedding[...], self.embed_dropout), ids, axis=0), None

    def top_outputs(
        self, ids: jax.Array, state: RecurrentState | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, RecurrentState]:
        """The top layer's outputs, time-major `[time, batch, units]`, before and after its dropout (the same
        array when not training; the regularisers of train_step read both), and the final state for ids
        `[batch, time]`. Time-major, the scans need no transposes of large arrays."""
        state = self.initial_state(ids.shape[0]) if state is None else state
        time_major = jnp.swapaxes(ids, 0, 1)  # ids `[batch, time]`, or one-hot rows `[batch, time, vocab]`.
        training = dropout_key is not None
        keys = jax.random.split(dropout_key, 2 * len(self.layers)) if training else [None] * (2 * len(self.layers))
        # The embedding's key comes after the layers' keys, so that theirs do not depend on it.
        embed_key = jax.random.fold_in(dropout_key, len(keys)) if training and self.embed_dropout else None
        x, table = self.first_input(time_major, embed_key)
        new_state = []
        for i, (layer, carry) in enumerate(zip(self.layers, state)):
            kernel = None
            if training and self.weight_dropout:
                w = layer.recurrent_kernel[...]
                kernel = dropout(keys[2 * i], w, self.weight_dropout, w.shape)
            raw, carry = layer(x, carry, kernel, table if i == 0 else None)
            x = raw
            if training and self.dropout:
                x = dropout(keys[2 * i + 1], raw, self.dropout, (1, *raw.shape[1:]))
            new_state.append(carry)
        return raw, x, tuple(new_state)

    def features(
        self, ids: jax.Array, state: RecurrentState | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, RecurrentState]:
        """Top-layer outputs, time-major `[time, batch, units]` (dropped out when training), and the final
        state for ids `[batch, time]`."""
        _, hs, state = self.top_outputs(ids, state, dropout_key)
        return hs, state

    def logits(self, hs: jax.Array) -> jax.Array:
        """Next-character logits `[..., vocab]` of top-layer outputs hs `[..., units]`: the head, tied or not."""
        return self.head(hs, self.embed.embedding[...]) if self.tie_weights else self.head(hs)

    def input_table(self) -> jax.Array:
        """What each character adds to the first layer's gates, bias included, `[vocab, gates*units]`: its row
        of the one-hot input kernel, or its embedding times that kernel."""
        layer = self.layers[0]
        kernel = layer.input_kernel[...]
        return (kernel if self.embed is None else self.embed.embedding[...] @ kernel) + layer.bias[...]

    def head_weights(self) -> tuple[jax.Array, jax.Array]:
        """The head as one affine map of the top outputs: kernel `[units, vocab]` and bias `[vocab]` (tied: the
        embedding's transpose, after the projection when there is one)."""
        if not self.tie_weights:
            return self.head.kernel[...], self.head.bias[...]
        kernel = self.embed.embedding[...].T
        if self.head.projection is not None:
            kernel = self.head.projection[...] @ kernel
        return kernel, self.head.bias[...]

    def __call__(
        self, ids: jax.Array, state: RecurrentState | None = None, dropout_key: jax.Array | None = None
    ) -> tuple[jax.Array, RecurrentState]:
        """Logits `[batch, time, vocab]` for ids `[batch, time]`, and the final state."""
        hs, state = self.features(ids, state, dropout_key)
        return jnp.swapaxes(self.logits(hs), 0, 1), state


def create_model(config: ml_collections.ConfigDict, vocab_size: int) -> CharLSTM:
    """The model `config.model` describes, initialised from `config.seed`."""
    m = config.model
    return CharLSTM(
        vocab_size, m.units, m.num_layers, cell=m.cell, embed_dim=m.embed_dim, dropout=m.dropout,
        weight_dropout=m.weight_dropout, embed_dropout=m.embed_dropout, tie_weights=m.tie_weights,
        mogrifier_rounds=m.mogrifier_rounds, lstm_impl=m.lstm_impl, rngs=nnx.Rngs(config.seed),
    )


def train_step_flops(config: ml_collections.ConfigDict, vocab_size: int) -> float:
    """Matmul FLOPs of one train step (the benchmark's GFLOP/s): the forward pass's input projections
    (none for one-hot input, a gather, unless mogrifier rounds scale it), mogrifier rounds, recurrent
    matmuls and head (a tied head's projection included), times 3, as the backward pass costs about twice
    the forward."""
    m, batch, length = config.model, config.train.batch_size, config.data.seq_length
    gates = cells.get(m.cell).gates

    def layer(n_in: int, projected: bool) -> int:
        return 2 * ((n_in if projected else 0) + m.units) * gates * m.units + 2 * m.mogrifier_rounds * m.units * n_in

    first = layer(m.embed_dim or vocab_size, bool(m.embed_dim or m.mogrifier_rounds))
    per_position = first + (m.num_layers - 1) * layer(m.units, True)
    projection = 2 * m.units * m.embed_dim if m.tie_weights and m.embed_dim != m.units else 0
    head = projection + 2 * (m.embed_dim if m.tie_weights else m.units) * vocab_size
    head_positions = data.targets_per_window(length, config.train.objective)
    return 3 * batch * (length * per_position + head_positions * head)


def vocab_axes(params: dict) -> dict[tuple, int]:
    """The axis indexed by character id of each parameter that has one, by its path in split_model's dict:
    the input table's rows (the embedding, or the first layer's input kernel when the input is one-hot) and
    the head's outputs (a tied head has only its bias) and, with one-hot input, the first layer's mogrifier
    round kernels (Q `[units, vocab]` on even rounds, R `[vocab, units]` on odd ones)."""
    if "embed" in params:
        axes = {("embed", "embedding"): 0}
    else:
        rounds = params["layers"][0].get("rounds", {})
        axes = {("layers", 0, "input_kernel"): 0} | {("layers", 0, "rounds", i): 1 - i % 2 for i in rounds}
    return axes | {("head", "bias"): 0} | ({("head", "kernel"): 1} if "kernel" in params["head"] else {})


def split_model(model: CharLSTM) -> tuple[nnx.GraphDef, dict]:
    """The static graph and the parameters as a pure dict of arrays (what jit and checkpoints take)."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)

"""The recurrent cells a model stacks, by name (`model.cell`): one file each, one line each in CELLS.

A cell gives its gate blocks per unit (its kernels are `[in, gates*units]` and `[units,
gates*units]`), the size of its carry, its step, and optionally its own way to run a whole layer
over time; without one, the layer projects its inputs once and scans the step with autodiff.

- `lstm`: the LSTM, run by the implementation model.lstm_impl names (charlstm.lstm);
- `gru`: the GRU, reset gate applied after the recurrent matmul;
- `rnn`: the Elman RNN, h = tanh(x W + h U + b);
- `mogrifier`: the Mogrifier LSTM, x and h gating each other for model.mogrifier_rounds rounds before
  each LSTM step; with 0 rounds, the LSTM.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from charlstm.cells import gru, lstm, mogrifier, rnn
from charlstm.errors import CharLSTMError
from charlstm.lstm.cell import Carry


def zero_bias(units: int, gates: int) -> jax.Array:
    """`[gates*units]` zeros: the bias a layer starts from unless its cell says otherwise."""
    return jnp.zeros(gates * units)


@dataclasses.dataclass(frozen=True)
class Cell:
    """What a layer needs of its cell."""

    gates: int  # Gate blocks per unit.
    carry_size: int  # Arrays in the carry, each `[batch, units]`: (h, c) for an LSTM, (h,) for a GRU.
    step: Callable[[jax.Array, Carry, jax.Array], Carry]  # (recurrent_kernel, carry, x_proj `[batch, gates*units]`).
    # (lstm_impl, input_kernel, recurrent_kernel, bias, carry, x, *round_kernels) -> (hs, carry), as
    # charlstm.lstm.lstm_scan; None: project x, then scan `step` with autodiff.
    scan: Callable[..., tuple[jax.Array, Carry]] | None = None
    initial_bias: Callable[[int, int], jax.Array] = zero_bias  # (units, gates) -> the bias `[gates*units]`.
    lstm_impls: tuple[str, ...] = ("auto",)  # The model.lstm_impl values it runs with.
    # (in_features, units, rounds, rngs) -> the kernels of its rounds (model.mogrifier_rounds), which the
    # layer hands to `scan` after x; None: a cell without rounds.
    round_kernels: Callable[..., list[jax.Array]] | None = None


CELLS = {
    "lstm": Cell(lstm.GATES, lstm.CARRY_SIZE, lstm.step, lstm.scan, lstm.initial_bias, lstm.IMPLS),
    "gru": Cell(gru.GATES, gru.CARRY_SIZE, gru.step),
    "rnn": Cell(rnn.GATES, rnn.CARRY_SIZE, rnn.step),
    "mogrifier": Cell(
        mogrifier.GATES, mogrifier.CARRY_SIZE, mogrifier.step, mogrifier.scan, lstm.initial_bias, mogrifier.IMPLS,
        mogrifier.round_kernels,
    ),
}
NAMES = tuple(CELLS)


def get(name: str) -> Cell:
    """The cell registered as `name`; CharLSTMError listing the registered ones when there is none."""
    if name not in CELLS:
        raise CharLSTMError(f"model.cell={name!r} is unknown: use one of {', '.join(map(repr, NAMES))}")
    return CELLS[name]

"""The LSTM layer's implementations behind one signature, and the one rule that picks one.

Every implementation computes `lstm_scan(input_kernel, recurrent_kernel, bias, carry, x)`: x is
character ids `[time, batch]` (the input kernel acting as a table, as one-hot inputs would) or
features `[time, batch, in]`; the result is hs `[time, batch, units]` and the final (h, c). They
agree with `autodiff` in values and gradients (tests/test_lstm.py):

- `cudnn`: cuDNN on one NVIDIA GPU, float32 (charlstm.lstm.cudnn);
- `cpu_kernel`: the compiled CPU kernel on one CPU device, float32 (charlstm.lstm.cpu_kernel);
- `xla`: an XLA scan with a hand-written backward pass, anywhere (charlstm.lstm.xla);
- `autodiff`: autodiff through an XLA scan of the cell, the reference (charlstm.lstm.autodiff).

`model.lstm_impl='auto'` takes the first of AUTO_ORDER that can run; a name asks for that one.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from charlstm.errors import CharLSTMError
from charlstm.lstm import autodiff, cpu_kernel, cudnn, xla
from charlstm.lstm.cell import Carry


@dataclasses.dataclass(frozen=True)
class Implementation:
    lstm_scan: Callable[..., tuple[jax.Array, Carry]]  # The signature in this module's docstring.
    unavailable: Callable[[jnp.dtype], str | None]  # Why it cannot run here on arrays of a dtype; None if it can.


IMPLEMENTATIONS = {
    "cudnn": Implementation(cudnn.lstm_scan, cudnn.unavailable),
    "cpu_kernel": Implementation(cpu_kernel.lstm_scan, cpu_kernel.unavailable),
    "xla": Implementation(xla.lstm_scan, xla.unavailable),
    "autodiff": Implementation(autodiff.lstm_scan, autodiff.unavailable),
}
AUTO_ORDER = ("cudnn", "cpu_kernel", "xla")  # Fastest first; xla runs anywhere.
CHOICES = ("auto", *IMPLEMENTATIONS)


def select(name: str, dtype) -> str:
    """The implementation that `name` ('auto' or one of IMPLEMENTATIONS) runs here on arrays of `dtype`
    (None: of several dtypes). Raises CharLSTMError when the one asked for cannot run here."""
    if name == "auto":
        return next(n for n in AUTO_ORDER if IMPLEMENTATIONS[n].unavailable(dtype) is None)
    if name not in IMPLEMENTATIONS:
        raise CharLSTMError(f"model.lstm_impl={name!r} is unknown: use one of {', '.join(map(repr, CHOICES))}")
    if reason := IMPLEMENTATIONS[name].unavailable(dtype):
        runnable = [n for n in CHOICES if n == "auto" or IMPLEMENTATIONS[n].unavailable(dtype) is None]
        raise CharLSTMError(
            f"model.lstm_impl={name!r} cannot run here: {reason}; use one of {', '.join(map(repr, runnable))}"
        )
    return name


def common_dtype(*arrays: jax.Array):
    """The floating dtype all of `arrays` share, or None when they differ."""
    dtypes = {a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)}
    return dtypes.pop() if len(dtypes) == 1 else None


def lstm_scan(
    name: str, input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array
) -> tuple[jax.Array, Carry]:
    """The layer through the implementation `select(name, ...)` picks for these arrays' dtype."""
    floats = (input_kernel, recurrent_kernel, bias, *carry) + (() if jnp.issubdtype(x.dtype, jnp.integer) else (x,))
    implementation = IMPLEMENTATIONS[select(name, common_dtype(*floats))]
    return with_edges_settled(implementation.lstm_scan, input_kernel, recurrent_kernel, bias, carry, x)


def with_edges_settled(
    scan: Callable, input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array
) -> tuple[jax.Array, Carry]:
    """`scan(input_kernel, ...)` with the edge cases settled here, once for every implementation: no time
    steps or no rows give empty hs and the carry unchanged; an id outside [0, vocab) is clipped into it
    (the nearest row is read and gets the gradient), so that no implementation reads, wraps or drops
    differently. A corpus's ids are always in range: this only makes a caller's bug behave alike."""
    time, batch = x.shape[:2]
    if time == 0 or batch == 0:
        return jnp.zeros((time, batch, recurrent_kernel.shape[0]), recurrent_kernel.dtype), carry
    if jnp.issubdtype(x.dtype, jnp.integer):
        vocab = input_kernel.shape[0]
        x = jnp.clip(x.astype(jnp.int32), 0, vocab - 1)
    return scan(input_kernel, recurrent_kernel, bias, carry, x)

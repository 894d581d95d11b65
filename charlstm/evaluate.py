"""Validation loss as DESIGN.md defines it, for a model on any id sequence.

Every character at position >= seq_length is predicted from exactly its
preceding seq_length characters (a fresh LSTM state per window), so the
number does not depend on batch size or on where windows happen to start.
Each batch of windows is split over all devices (parallel.py).
"""

import functools
import html
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from charlstm import parallel
from charlstm.data import gather_windows


@functools.partial(jax.jit, static_argnames=("graphdef", "seq_length"))
def window_nll(graphdef: nnx.GraphDef, params, ids: jax.Array, starts: jax.Array, seq_length: int):
    """NLL in nats `[batch]` of ids[start + seq_length] given the seq_length ids before it."""
    model = nnx.merge(graphdef, params)
    windows = gather_windows(ids, starts, seq_length + 1)
    hs, _ = model.features(windows[:, :-1])
    logits = model.head(hs[-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, -1])


def limit(ids: np.ndarray, seq_length: int, max_chars: int) -> np.ndarray:
    """The head of `ids` in which `max_chars` characters are scored (0 = all of `ids`): eval.max_chars."""
    return ids[: seq_length + max_chars] if max_chars else ids


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, seq_length: int, batch_size: int) -> np.ndarray:
    """NLL in nats `[len(ids) - seq_length]` of every id at position >= seq_length.

    `batch_size` is rounded up to a multiple of the device count, so every batch splits over all devices.
    """
    mesh = parallel.make_mesh()
    batch_size = math.ceil(batch_size / mesh.size) * mesh.size
    count = len(ids) - seq_length
    starts = np.arange(math.ceil(count / batch_size) * batch_size, dtype=np.int32)
    starts[count:] = 0  # Padding rows repeat a valid window; they are dropped below.
    params = parallel.put(params, parallel.replicated(mesh))
    device_ids = parallel.put(np.asarray(ids), parallel.replicated(mesh))
    parts = [
        window_nll(graphdef, params, device_ids, parallel.put(batch, parallel.batch_sharding(mesh)), seq_length)
        for batch in starts.reshape(-1, batch_size)
    ]
    return parallel.to_host(jnp.concatenate(parts))[:count]


def mean_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, seq_length: int, batch_size: int) -> float:
    """`val_loss`: the mean of `per_char_nll`, in nats per character."""
    return average(per_char_nll(graphdef, params, ids, seq_length, batch_size))


def average(nll: np.ndarray) -> float:
    """The mean of per-character NLLs `[n]`, summed in float64 so long texts lose no precision."""
    return float(np.mean(nll, dtype=np.float64))


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)


# Surprisal at which the HTML shading is darkest; a uniform guess over 45 characters is 5.5 bits.
SHADE_BITS = 8.0


def surprisal_tsv(text: str, nll: np.ndarray) -> str:
    """A TSV of each scored character's surprisal; `nll` `[n]` in nats is for the last n characters of `text`."""
    first = len(text) - len(nll)
    escape = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t"})
    rows = [f"{first + i}\t{text[first + i].translate(escape)}\t{bits_per_char(x):.4f}" for i, x in enumerate(nll)]
    return "position\tchar\tsurprisal_bits\n" + "".join(row + "\n" for row in rows)


def surprisal_html(text: str, nll: np.ndarray, title: str) -> str:
    """A page showing `text` with each scored character shaded by its surprisal (hover: bits); context in grey."""
    first = len(text) - len(nll)
    spans = [f'<span class="context">{html.escape(text[:first])}</span>']
    for char, x in zip(text[first:], nll):
        bits = bits_per_char(float(x))
        shown = "\u21b5\n" if char == "\n" else html.escape(char)
        shade = f"background:rgba(220,0,0,{min(bits / SHADE_BITS, 1):.2f})"
        spans.append(f'<span style="{shade}" title="{bits:.2f} bits">{shown}</span>')
    return (
        f"<!doctype html>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
        "<style>body{font:14px monospace} pre{white-space:pre-wrap} .context{color:#999}</style>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>Red: surprisal, darkest at {SHADE_BITS:g} bits or more; hover a "
        "character for its value. Grey: context only, not scored.</p>\n"
        f"<pre>{''.join(spans)}</pre>\n"
    )

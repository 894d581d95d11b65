"""Per-character NLL of a model on any id sequence, under three protocols, and its summaries.

Every protocol scores the same characters, those at position >= `first`
(data.seq_length: the first seq_length characters are context only), so
their numbers can be set side by side, character by character:

- `window` (exact, the original val_loss): each scored character is predicted
  from exactly its preceding `first` characters with a fresh LSTM state:
  `first` cell steps per scored character.
- `stream`: one LSTM state carried from the text's first character to its last,
  one cell step per character, as published character-level results are
  measured (batch 1; they score from the first character on).
- `segments` (the cheap per-epoch metric): the scored characters are cut into
  segments of `segment_length`, run side by side as a batch; each segment's state
  is warmed up on the `burn_in` characters before it (no loss on those), or on
  all of them where fewer precede it. About (1 + burn_in / segment_length) cell
  steps per scored character; with a burn-in that reaches the text's start it is
  exactly `stream`.

Batches are split over all devices (parallel.py).
"""

import dataclasses
import functools
import html
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from charlstm import parallel
from charlstm.data import gather_windows

# Time steps per call of the stream protocol: bounds its memory on long texts.
STREAM_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class Scoring:
    """A protocol and its settings: which characters are scored and how (config.eval, data.seq_length)."""

    protocol: str
    first: int  # Characters of context before the first scored one; the window protocol's window.
    segment_length: int  # 'segments': scored characters per segment.
    burn_in: int  # 'segments': characters read before each segment, unscored.
    batch_size: int  # Windows or segments per batch: memory and speed only, not the result.

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, protocol: str | None = None) -> "Scoring":
        """The scoring `config` sets up, under `protocol` (default: the per-epoch eval.protocol)."""
        e = config.eval
        return cls(protocol or e.protocol, config.data.seq_length, e.segment_length, e.burn_in, e.batch_size)


def nll_of(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """NLL in nats of each target id under float32 logits `[..., vocab]`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


@functools.partial(jax.jit, static_argnames=("graphdef", "seq_length"))
def window_nll(graphdef: nnx.GraphDef, params, ids: jax.Array, starts: jax.Array, seq_length: int):
    """NLL in nats `[batch]` of ids[start + seq_length] given the seq_length ids before it."""
    model = nnx.merge(graphdef, params)
    windows = gather_windows(ids, starts, seq_length + 1)
    hs, _ = model.features(windows[:, :-1])
    return nll_of(model.head(hs[-1]), windows[:, -1])


@functools.partial(jax.jit, static_argnames="graphdef")
def sequence_nll(graphdef: nnx.GraphDef, params, inputs: jax.Array, targets: jax.Array, state):
    """NLL `[batch, time]` of targets after each input, both ids `[batch, time]`, from `state`
    (None: zeros), and the state after the last input."""
    model = nnx.merge(graphdef, params)
    hs, state = model.features(inputs, state)
    return nll_of(model.head(hs), targets.T).T, state


def limit(ids: np.ndarray, seq_length: int, max_chars: int) -> np.ndarray:
    """The head of `ids` in which `max_chars` characters are scored (0 = all of `ids`): eval.max_chars."""
    return ids[: seq_length + max_chars] if max_chars else ids


def scored_ids(ids: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """The part of a validation or test split that is scored: `limit` by the config's eval.max_chars."""
    return limit(ids, config.data.seq_length, config.eval.max_chars)


def _batches(count: int, batch_size: int, mesh) -> tuple[int, int]:
    """(batches, rows per batch) for `count` rows in batches of at most `batch_size`, rows a
    multiple of the mesh size: equal batches, so one compiled shape serves all of them."""
    n_batches = max(math.ceil(count / batch_size), 1)
    rows = math.ceil(math.ceil(count / n_batches) / mesh.size) * mesh.size
    return n_batches, rows


def window_per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, first: int, batch_size: int) -> np.ndarray:
    """The window protocol: NLL in nats `[len(ids) - first]`, each id from exactly the `first` before it."""
    mesh = parallel.make_mesh()
    count = len(ids) - first
    n_batches, rows = _batches(count, batch_size, mesh)
    starts = np.zeros(n_batches * rows, np.int32)  # Padding rows repeat a valid window; they are dropped below.
    starts[:count] = np.arange(count)
    params = parallel.put(params, parallel.replicated(mesh))
    device_ids = parallel.put(np.asarray(ids), parallel.replicated(mesh))
    parts = [
        window_nll(graphdef, params, device_ids, parallel.put(batch, parallel.batch_sharding(mesh)), first)
        for batch in starts.reshape(n_batches, rows)
    ]
    return parallel.to_host(jnp.concatenate(parts))[:count]


def stream_per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, first: int) -> np.ndarray:
    """The stream protocol: NLL `[len(ids) - first]`, one state carried from ids[0], in chunks of
    STREAM_CHUNK steps (the last one padded at its end, which changes nothing before it)."""
    ids = np.asarray(ids, np.int32)
    steps = len(ids) - 1  # Input ids[t] predicts ids[t + 1].
    chunk = min(STREAM_CHUNK, steps)
    padded = np.zeros(math.ceil(steps / chunk) * chunk + 1, np.int32)
    padded[: len(ids)] = ids
    state, parts = None, []
    for at in range(0, steps, chunk):
        nll, state = sequence_nll(
            graphdef, params, padded[None, at : at + chunk], padded[None, at + 1 : at + chunk + 1], state
        )
        parts.append(nll[0])
    return parallel.to_host(jnp.concatenate(parts))[first - 1 : steps]


def segments_per_char_nll(
    graphdef: nnx.GraphDef, params, ids: np.ndarray, first: int, segment_length: int, burn_in: int, batch_size: int
) -> np.ndarray:
    """The segments protocol: NLL `[len(ids) - first]` (module docstring).

    Segments whose burn-in would reach before the text's start read it all from ids[0]: together
    they are one stream over the text up to the end of the last of them, scored as such."""
    n = len(ids)
    starts = np.arange(first, n, segment_length)
    from_start = starts[starts < burn_in]
    parts = []
    if len(from_start):
        end = min(int(from_start[-1]) + segment_length, n)
        parts.append(stream_per_char_nll(graphdef, params, ids[:end], first))
    starts = starts[starts >= burn_in]
    if len(starts):
        parts.append(_burnt_in_segments(graphdef, params, ids, starts, segment_length, burn_in, batch_size))
    return np.concatenate(parts)[: n - first]


def _burnt_in_segments(graphdef, params, ids, starts, segment_length: int, burn_in: int, batch_size: int):
    """NLL `[len(starts) * segment_length]` of the segments at `starts`, each after its full burn-in;
    past the text's end, positions repeat its last id and are scored (the caller drops them)."""
    mesh = parallel.make_mesh()
    n_batches, rows = _batches(len(starts), batch_size, mesh)
    row_starts = np.full(n_batches * rows, starts[0])  # Padding rows repeat a segment; dropped below.
    row_starts[: len(starts)] = starts
    positions = np.minimum(row_starts[:, None] - burn_in + np.arange(burn_in + segment_length), len(ids) - 1)
    windows = np.asarray(ids, np.int32)[positions]
    params = parallel.put(params, parallel.replicated(mesh))
    batch = parallel.batch_sharding(mesh)
    parts = []
    for rows_of in windows.reshape(n_batches, rows, -1):
        rows_of = parallel.put(rows_of, batch)
        nll, _ = sequence_nll(graphdef, params, rows_of[:, :-1], rows_of[:, 1:], None)
        parts.append(nll[:, burn_in - 1 :])
    return parallel.to_host(jnp.concatenate(parts))[: len(starts)].reshape(-1)


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - scoring.first]` of every id at position >= scoring.first, under its protocol."""
    if scoring.protocol == "window":
        return window_per_char_nll(graphdef, params, ids, scoring.first, scoring.batch_size)
    if scoring.protocol == "stream":
        return stream_per_char_nll(graphdef, params, ids, scoring.first)
    return segments_per_char_nll(
        graphdef, params, ids, scoring.first, scoring.segment_length, scoring.burn_in, scoring.batch_size
    )


def mean_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> float:
    """The mean of `per_char_nll`, in nats per character."""
    return average(per_char_nll(graphdef, params, ids, scoring))


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

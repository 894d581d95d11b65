"""Per-character NLL of a model on any id sequence under a named protocol (charlstm.protocols), and
its summaries: means, bits per character, surprisal as TSV and HTML.

Every protocol scores the same characters, those at position >= data.seq_length, so their
numbers can be set side by side, character by character.
"""

import html
import math

import ml_collections
import numpy as np
from flax import nnx

from charlstm import protocols
from charlstm.protocols.base import Scoring
from charlstm.protocols.base import sequence_nll as sequence_nll  # Public here too: the model's NLL of sequences.


def limit(ids: np.ndarray, seq_length: int, max_chars: int) -> np.ndarray:
    """The head of `ids` in which `max_chars` characters are scored (0 = all of `ids`): eval.max_chars."""
    return ids[: seq_length + max_chars] if max_chars else ids


def scored_ids(ids: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """The part of a validation or test split that is scored: `limit` by the config's eval.max_chars."""
    return limit(ids, config.data.seq_length, config.eval.max_chars)


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - scoring.first]` of every id at position >= scoring.first, under its protocol."""
    return protocols.select(scoring).per_char_nll(graphdef, params, ids, scoring)


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
# The shading's colour, its opacity the surprisal over SHADE_BITS (also the served page's, scripts/serve.py).
SHADE_RGB = (220, 0, 0)


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
        shade = f"background:rgba({','.join(map(str, SHADE_RGB))},{min(bits / SHADE_BITS, 1):.2f})"
        spans.append(f'<span style="{shade}" title="{bits:.2f} bits">{shown}</span>')
    return (
        f"<!doctype html>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
        "<style>body{font:14px monospace} pre{white-space:pre-wrap} .context{color:#999}</style>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>Red: surprisal, darkest at {SHADE_BITS:g} bits or more; hover a "
        "character for its value. Grey: context only, not scored.</p>\n"
        f"<pre>{''.join(spans)}</pre>\n"
    )

"""The evaluation protocols by name (`eval.protocol`, `eval.final_protocols`, evaluate.py's --protocol):
one file each, one line each in PROTOCOLS.

Every protocol computes `per_char_nll(graphdef, params, ids, scoring)`: the NLL in nats
`[len(ids) - first]` of each character at position >= scoring.first (data.seq_length: the first
characters are context only), so all of them score the same characters and their numbers line up
character by character:

- `window`: each character from exactly the `first` before it, from a zero state; exact, slow;
- `segments`: segments run side by side, each warmed up on the characters before it; cheap;
- `stream`: one state carried over the whole text at batch 1;
- `dynamic`: a stream whose weights adapt to the text as it is scored (config.eval.dynamic).

A protocol's own settings live in config.eval.<name> (a sub-dict, as eval.dynamic) and reach it as
scoring.settings. Batches are split over all devices (parallel.py).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from charlstm.errors import CharLSTMError
from charlstm.protocols import dynamic, segments, stream, window
from charlstm.protocols.base import Scoring


def _no_settings(scoring: Scoring) -> None:
    """A protocol without settings of its own can always score."""
    return None


def _name(scoring: Scoring) -> str:
    return scoring.protocol


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What scoring needs of a protocol."""

    per_char_nll: Callable[..., np.ndarray]  # (graphdef, params, ids, scoring) -> NLL `[len(ids) - first]`.
    unavailable: Callable[[Scoring], str | None] = _no_settings  # Why its settings cannot score; None if they can.
    label: Callable[[Scoring], str] = _name  # The name shown with its numbers.
    reads_training_text: bool = False  # Needs scoring.train_ids.


PROTOCOLS = {
    "window": Protocol(window.per_char_nll),
    "segments": Protocol(segments.per_char_nll),
    "stream": Protocol(stream.per_char_nll),
    "dynamic": Protocol(dynamic.per_char_nll, dynamic.unavailable, dynamic.label, reads_training_text=True),
}
NAMES = tuple(PROTOCOLS)


def select(scoring: Scoring) -> Protocol:
    """The protocol `scoring` names, once its settings are checked; CharLSTMError (listing the registered
    protocols for an unknown name) when it cannot score."""
    if scoring.protocol not in PROTOCOLS:
        raise CharLSTMError(
            f"evaluation protocol {scoring.protocol!r} is unknown: use one of {', '.join(map(repr, NAMES))}"
        )
    protocol = PROTOCOLS[scoring.protocol]
    if reason := protocol.unavailable(scoring):
        raise CharLSTMError(reason)
    if protocol.reads_training_text and scoring.train_ids is None:
        raise CharLSTMError(f"evaluation protocol {scoring.protocol!r} adapts on the training text: load the corpus")
    return protocol

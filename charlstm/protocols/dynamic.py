"""The dynamic protocol: dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models").

A copy of the weights adapts to the text as it is scored: the text runs as one
stream (the state carried throughout) in segments of `segment_length`; each
segment is first scored with the current weights, then one gradient step on
its mean NLL moves them, so no character is ever scored by weights that saw
it. The step is RMS-normalised and decays toward the trained weights θ₀:

    θ ← θ − lr · g / (rms + ε) + decay · r ⊙ (θ₀ − θ)

where rms is the root mean square of each weight's gradient on training
segments (measured once), ε = EPS_SHARE · mean(rms), and r = rms / mean(rms),
capped at 1 / decay so no weight overshoots θ₀: weights that move much in
training return faster. Scored characters are those at position >= `first`,
as for every protocol. Its settings are config.eval.dynamic (Settings).
"""

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm import parallel
from charlstm.errors import CharLSTMError
from charlstm.protocols.base import Scoring, sequence_nll

# ε of the step's denominator, as a share of the mean rms: keeps weights with tiny gradients in training finite.
EPS_SHARE = 0.01
# Training segments per batch, and batches, whose gradients give the rms statistics.
STAT_BATCH, STAT_BATCHES = 64, 16
# How an error names each setting: the config's fields (a script passes its own flags' names).
CONFIG_NAMES = {f: f"eval.dynamic.{f}" for f in ("learning_rate", "decay", "segment_length")}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Dynamic evaluation's hyperparameters, config.eval.dynamic (defaults and units there); tune them on
    validation, report on test."""

    learning_rate: float  # lr: size of the normalised step.
    decay: float  # Pull toward the trained weights per segment.
    segment_length: int  # Characters scored, then trained on, per step.

    def problem(self, names: Mapping[str, str] = CONFIG_NAMES) -> str | None:
        """The first setting out of range, under the name the user gave it by; None when all are in range."""
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            return f"{names['learning_rate']}={self.learning_rate} is invalid: use a step size > 0, e.g. 1e-4"
        if not 0 <= self.decay <= 1:
            return f"{names['decay']}={self.decay} is invalid: use a value in [0, 1], e.g. 1e-3"
        if not (isinstance(self.segment_length, int) and self.segment_length >= 1):
            return f"{names['segment_length']}={self.segment_length} is invalid: use an integer >= 1, e.g. 50"
        return None


def _mean_nll(params, graphdef, inputs, targets, state):
    nll, state = sequence_nll(graphdef, params, inputs, targets, state)
    return nll.mean(), (nll, state)


@functools.partial(jax.jit, static_argnames="graphdef")
def _squared_grads(graphdef: nnx.GraphDef, params, windows: jax.Array):
    """Squared gradients of the mean NLL of windows `[batch, length + 1]` (zero start state)."""
    grads = jax.grad(_mean_nll, has_aux=True)(params, graphdef, windows[:, :-1], windows[:, 1:], None)[0]
    return jax.tree.map(jnp.square, grads)


def gradient_rms(graphdef: nnx.GraphDef, params, train_ids: np.ndarray, segment_length: int) -> dict:
    """Per weight, the root mean square of its gradient over STAT_BATCHES batches of STAT_BATCH
    training segments of `segment_length` (fixed positions, spread evenly over the text)."""
    count = STAT_BATCH * STAT_BATCHES
    if len(train_ids) < segment_length + 2:
        raise CharLSTMError(
            f"the training text is shorter than a dynamic evaluation segment ({segment_length}): use a shorter one"
        )
    starts = np.linspace(0, len(train_ids) - segment_length - 2, count).astype(np.int64)
    windows = np.asarray(train_ids, np.int32)[starts[:, None] + np.arange(segment_length + 1)]
    total = None
    for batch in windows.reshape(STAT_BATCHES, STAT_BATCH, -1):
        squared = _squared_grads(graphdef, params, batch)
        total = squared if total is None else jax.tree.map(jnp.add, total, squared)
    return jax.tree.map(lambda s: jnp.sqrt(s / STAT_BATCHES), total)


@functools.partial(jax.jit, static_argnames="graphdef")
def _adapt(graphdef: nnx.GraphDef, params, rms, segments: jax.Array, learning_rate, decay):
    """Scores each of segments `[n, length + 1]` (consecutive, overlapping by one id) with the weights
    adapted on the ones before it, then steps on it; returns NLLs `[n, length]`."""
    leaves = jax.tree.leaves(rms)
    mean_rms = sum(x.sum() for x in leaves) / sum(x.size for x in leaves)
    denominator = jax.tree.map(lambda r: r + EPS_SHARE * mean_rms, rms)
    pull = jax.tree.map(lambda r: jnp.minimum(decay * r / mean_rms, 1.0), rms)  # decay · r, capped at 1.
    trained = params
    state = nnx.merge(graphdef, params).initial_state(1)

    def step(carry, segment):
        params, state = carry
        grads, (nll, state) = jax.grad(_mean_nll, has_aux=True)(
            params, graphdef, segment[None, :-1], segment[None, 1:], state
        )
        params = jax.tree.map(
            lambda p, g, d, k, p0: p - learning_rate * g / d + k * (p0 - p), params, grads, denominator, pull, trained
        )
        return (params, jax.lax.stop_gradient(state)), nll[0]

    _, nll = jax.lax.scan(step, (params, state), segments)
    return nll


def unavailable(scoring: Scoring) -> str | None:
    """Why it cannot score with these settings; None when it can."""
    return Settings(**scoring.settings).problem()


def label(scoring: Scoring) -> str:
    """The name shown with its numbers: its settings change them."""
    s = Settings(**scoring.settings)
    return f"dynamic (lr {s.learning_rate:g}, decay {s.decay:g}, segment {s.segment_length})"


def per_char_nll(graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring) -> np.ndarray:
    """NLL in nats `[len(ids) - first]` of every id at position >= `first` under dynamic evaluation;
    `scoring.train_ids` gives the gradient statistics."""
    return adapted_nll(graphdef, params, ids, scoring.first, scoring.train_ids, Settings(**scoring.settings))


def adapted_nll(
    graphdef: nnx.GraphDef, params, ids: np.ndarray, first: int, train_ids: np.ndarray, settings: Settings
) -> np.ndarray:
    """NLL in nats `[len(ids) - first]` while adapting the weights with `settings`, statistics from `train_ids`."""
    n, length = len(ids), settings.segment_length
    rms = gradient_rms(graphdef, params, train_ids, length)
    steps = len(ids) - 1  # Input ids[t] predicts ids[t + 1].
    n_segments = math.ceil(steps / length)
    padded = np.zeros(n_segments * length + 1, np.int32)  # The last segment is padded at its end.
    padded[:n] = ids
    segments = padded[np.arange(n_segments)[:, None] * length + np.arange(length + 1)]
    nll = _adapt(graphdef, params, rms, segments, settings.learning_rate, settings.decay)
    return parallel.to_host(nll).reshape(-1)[first - 1 : steps]

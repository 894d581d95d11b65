"""An exponential moving average of the weights, kept in the optimizer state (train.average_decay).

The average follows the weights after each step:

    a_t = d_t · a_{t-1} + (1 − d_t) · θ_t,   d_t = min(decay, (1 + t) / (10 + t)),

with a_0 = θ_0 and t the step count from 1: the warm-up (as in TensorFlow's
ExponentialMovingAverage with num_updates) lets the average leave the
initial weights within the first steps. As an optax transformation it passes
the updates on unchanged, so it is compiled into the train step, saved and
restored with the optimizer state, and a resumed run continues it exactly.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class AverageState(NamedTuple):
    count: jax.Array  # Steps averaged so far.
    average: optax.Params  # a_t, like the params.


def track_average(decay: float) -> optax.GradientTransformation:
    """Keeps the average of the params after each update; the updates pass unchanged."""

    def init(params):
        return AverageState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params))

    def update(updates, state, params):
        count = state.count + 1
        d = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
        average = jax.tree.map(lambda a, p, u: d * a + (1 - d) * (p + u), state.average, params, updates)
        return updates, AverageState(count, average)

    return optax.GradientTransformation(init, update)


def averaged(opt_state) -> optax.Params | None:
    """The average kept in `opt_state` by track_average, or None when there is none."""
    states = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, AverageState))
              if isinstance(s, AverageState)]
    return states[0].average if states else None


def model_params(params: optax.Params | None, opt_state) -> optax.Params:
    """The weights that are the model, evaluated, sampled and loaded by generate and evaluate: the average
    kept in `opt_state` when training keeps one (train.average_decay), else `params`."""
    average = averaged(opt_state)
    return params if average is None else average

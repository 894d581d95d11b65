"""optimizer.make_optimizer: the learning rate at each step, global-norm clipping and decoupled weight decay."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import optimizer

PEAK = 0.01

# Two leaves, so that clipping by the global norm differs from clipping each leaf.
PARAMS = {"a": np.asarray([0.5, -1.0]), "b": np.asarray([2.0, 0.0, -0.25])}
BIG = {"a": np.asarray([30.0, 0.0]), "b": np.asarray([0.0, 40.0, 0.0])}  # Global norm 50.
SMALL = {"a": np.asarray([0.1, -0.2]), "b": np.asarray([0.05, 0.1, 0.3])}  # Global norm 0.39.
GRADIENTS = [BIG, SMALL, jax.tree.map(lambda g: -0.5 * g, BIG), SMALL]


def updates_of(train_config, total_steps: int, gradients: list[dict], params: dict) -> list[dict]:
    """The updates make_optimizer's transformation gives for `gradients` in turn, applying each to `params`."""
    tx = optimizer.make_optimizer(train_config, total_steps)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    state, updates = tx.init(params), []
    for grads in gradients:
        update, state = tx.update(jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, update)
        updates.append(jax.tree.map(np.asarray, update))
    return updates


def expected_learning_rate(step: int, schedule: str, warmup: int, total: int) -> float:
    """Linear from 0 to PEAK over the warm-up steps, then PEAK, or a cosine from PEAK to 0 at `total`."""
    if step < warmup:
        return PEAK * step / warmup
    if schedule == "constant":
        return PEAK
    return PEAK * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("schedule, warmup", [("constant", 0), ("constant", 10), ("cosine", 0), ("cosine", 10)])
def test_the_learning_rate_follows_the_configured_schedule(tiny_config, schedule, warmup):
    """With a constant gradient, Adam's bias-corrected step is exactly the learning rate (up to eps = 1e-8
    relative), so the updates read the schedule off step by step."""
    total = 50
    tiny_config.train.update(learning_rate=PEAK, schedule=schedule, warmup_steps=warmup)
    ones = {"w": np.ones(1)}
    rates = [-float(u["w"][0]) for u in updates_of(tiny_config.train, total, [ones] * total, {"w": np.zeros(1)})]
    expected = [expected_learning_rate(step, schedule, warmup, total) for step in range(total)]
    # float32 Adam: its bias correction 1 - 0.999^t cancels digits, ~2e-5 relative in the first steps.
    np.testing.assert_allclose(rates, expected, rtol=1e-4, atol=1e-10)
    if warmup:
        assert rates[0] == 0 and rates[warmup] == pytest.approx(PEAK, rel=1e-4)  # From 0 up to the peak.
    if schedule == "cosine":
        assert rates[-1] < 0.01 * PEAK  # About 0 at the last step: PEAK (1 - cos(pi / 40)) / 2 at most.


def clipped(grads: dict, max_norm: float) -> dict:
    """`grads` scaled down to a global norm (over all leaves together) of at most `max_norm`."""
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    return {k: g * min(1.0, max_norm / norm) for k, g in grads.items()}


def adamw_updates(gradients: list[dict], params: dict, weight_decay: float) -> list[dict]:
    """The reference, from Loshchilov & Hutter's AdamW in float64 (optax's defaults b1 0.9, b2 0.999,
    eps 1e-8): -lr (m_hat / (sqrt(v_hat) + eps) + weight_decay * param), applied after each step."""
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    params, updates = dict(params), []
    for t, grads in enumerate(gradients, start=1):
        update = {}
        for k, g in grads.items():
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g**2
            m_hat, v_hat = m[k] / (1 - 0.9**t), v[k] / (1 - 0.999**t)
            update[k] = -PEAK * (m_hat / (np.sqrt(v_hat) + 1e-8) + weight_decay * params[k])
            params[k] = params[k] + update[k]
        updates.append(update)
    return updates


@pytest.mark.parametrize("clip_norm, weight_decay", [(0.0, 0.0), (1.0, 0.0), (0.0, 0.1), (1.0, 0.1)])
def test_updates_are_adamw_on_gradients_clipped_to_the_global_norm(tiny_config, clip_norm, weight_decay):
    tiny_config.train.update(learning_rate=PEAK, schedule="constant", clip_norm=clip_norm, weight_decay=weight_decay)
    seen = [clipped(g, clip_norm) if clip_norm else g for g in GRADIENTS]
    expected = adamw_updates(seen, PARAMS, weight_decay)
    for got, want in zip(updates_of(tiny_config.train, len(GRADIENTS), GRADIENTS, PARAMS), expected, strict=True):
        for k in PARAMS:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-9)  # float32 against float64.


def test_weight_decay_alone_shrinks_the_weights_by_lr_times_decay_per_step(tiny_config):
    """Decoupled decay (AdamW): with zero gradients each step multiplies the weights by 1 - lr * decay;
    an L2 penalty added to the gradient would instead move each weight by about lr."""
    tiny_config.train.update(learning_rate=PEAK, schedule="constant", weight_decay=0.1)
    zeros = jax.tree.map(np.zeros_like, PARAMS)
    params = dict(PARAMS)
    for update in updates_of(tiny_config.train, 3, [zeros] * 3, PARAMS):
        for k in PARAMS:
            np.testing.assert_allclose(update[k], -PEAK * 0.1 * params[k], rtol=1e-6)
            params[k] = params[k] + update[k]
    np.testing.assert_allclose(params["b"], PARAMS["b"] * (1 - PEAK * 0.1) ** 3, rtol=1e-6)

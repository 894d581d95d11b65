"""The weights' moving average: the rule by hand, and training that evaluates and keeps it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from charlstm import averaging, evaluate, train_step, trained_run
from charlstm.checkpoints import Checkpoints
from charlstm.optimizer import make_optimizer
from charlstm.train import train_and_evaluate


def test_two_steps_match_the_rule_by_hand():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = [{"w": jnp.array([0.5, 1.0])}, {"w": jnp.array([-1.0, 2.0])}]
    tx = optax.chain(optax.sgd(0.1), averaging.track_average(0.5))
    state = tx.init(params)
    p0 = np.array([1.0, -2.0])
    p1 = p0 - 0.1 * np.array([0.5, 1.0])
    p2 = p1 - 0.1 * np.array([-1.0, 2.0])
    d1, d2 = 2 / 11, 3 / 12  # min(0.5, (1 + t) / (10 + t)) at t = 1, 2: the warm-up.
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["w"], p2, rtol=1e-6)  # The updates passed unchanged.
    a1 = d1 * p0 + (1 - d1) * p1
    np.testing.assert_allclose(averaging.averaged(state)["w"], d2 * a1 + (1 - d2) * p2, rtol=1e-6)


def test_without_averaging_the_optimizer_and_evaluated_weights_are_unchanged(tiny_config):
    assert averaging.averaged(make_optimizer(tiny_config.train, 10).init({"w": jnp.ones(2)})) is None
    tx = optax.adam(0.1)
    state = train_step.initial_state({"w": jnp.ones(2)}, tx, None)
    assert state.model_params() is state.params


@pytest.mark.slow
def test_training_evaluates_keeps_and_loads_the_average(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    tiny_config.train.average_decay = 0.9
    (metrics,) = train_and_evaluate(tiny_config, tmp_path)
    run = trained_run.load(tmp_path)
    corpus = run.corpus()
    segments = evaluate.Scoring.from_config(tiny_config)
    assert np.isclose(
        evaluate.mean_nll(run.graphdef, run.params, corpus.val_ids, segments), metrics["val_loss"], rtol=1e-6
    )
    raw = Checkpoints(tmp_path, read_only=True).restore_params(run.step, like=run.params)
    assert not np.isclose(
        evaluate.mean_nll(run.graphdef, raw, corpus.val_ids, segments), metrics["val_loss"], rtol=1e-3
    )
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    window = evaluate.Scoring.from_config(tiny_config, "window")
    assert np.isclose(
        evaluate.mean_nll(run.graphdef, run.params, corpus.val_ids, window), final["val"]["window"]["loss"], rtol=1e-6
    )
    assert jax.tree.structure(run.params) == jax.tree.structure(raw)

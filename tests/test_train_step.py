"""The training objective (charlstm.train_step.loss_fn): the regularisation methods act in training only, and
at their off values leave the loss and its gradients bit for bit as they were."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from charlstm import evaluate, train_step
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer
from tests.conftest import assert_float32_accurate, in_float64

VOCAB = 9
WINDOWS = jax.random.randint(jax.random.key(0), (4, 7), 0, VOCAB)  # [batch, seq_length + 1]
KEY = jax.random.key(1)  # The dropout key of every training loss below.


def objective(config, graphdef, params, key=KEY) -> tuple[jax.Array, jax.Array]:
    """loss_fn's (training objective, mean cross-entropy) on WINDOWS with `config.train`'s penalties."""
    penalties = (config.train.activation_reg, config.train.temporal_activation_reg)
    total, (loss, _) = train_step.loss_fn(graphdef, params, WINDOWS, "all", key, None, "float32", penalties)
    return total, loss


def test_the_methods_at_their_off_values_leave_loss_and_gradients_bit_for_bit(tiny_config):
    """Every new field explicitly at its off value: loss_fn's loss and gradients are those of the model's plain
    pieces (features, the Linear head, the cross-entropy), with dropout and DropConnect drawing their keys."""
    tiny_config.model.update(dropout=0.3, weight_dropout=0.3, embed_dim=8)
    tiny_config.model.update(embed_dropout=0.0, tie_weights=False, cell="lstm", mogrifier_rounds=0)
    tiny_config.train.update(activation_reg=0.0, temporal_activation_reg=0.0)
    graphdef, params = split_model(create_model(tiny_config, VOCAB))

    def plain(params):
        model = nnx.merge(graphdef, params)
        hs, _ = model.features(WINDOWS[:, :-1], None, KEY)
        return optax.softmax_cross_entropy_with_integer_labels(model.head(hs), WINDOWS[:, 1:].T).mean()

    ours = jax.jit(jax.value_and_grad(lambda p: objective(tiny_config, graphdef, p)[0]))(params)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(jax.jit(jax.value_and_grad(plain))(params))):
        np.testing.assert_array_equal(got, want)


def test_the_activation_penalties_equal_a_float64_hand_computation(tiny_config):
    tiny_config.model.dropout = 0.3
    tiny_config.train.update(activation_reg=2.0, temporal_activation_reg=1.5)
    graphdef, params = split_model(create_model(tiny_config, VOCAB))
    raw, dropped, _ = nnx.merge(graphdef, params).top_outputs(WINDOWS[:, :-1], None, KEY)
    assert not np.array_equal(raw, dropped)  # AR reads the outputs after dropout, TAR those before.

    def by_hand(dtype):
        h, d = np.asarray(raw, dtype), np.asarray(dropped, dtype)
        return 2.0 * np.mean(d * d) + 1.5 * np.mean((h[1:] - h[:-1]) ** 2)

    penalty = train_step.activation_penalty(raw, dropped, 2.0, 1.5)
    assert_float32_accurate(penalty, by_hand(np.float32), by_hand(np.float64), "AR + TAR")
    total, loss = objective(tiny_config, graphdef, params)
    np.testing.assert_array_equal(total, loss + penalty)
    tiny_config.train.update(activation_reg=0.0, temporal_activation_reg=0.0)
    np.testing.assert_array_equal(loss, objective(tiny_config, graphdef, params)[0])  # The loss is the CE alone.


@pytest.mark.parametrize("embed_dim, method", [
    (8, {"model.embed_dropout": 0.5}),
    (0, {"model.embed_dropout": 0.5}),  # One-hot input: rows of the first layer's input kernel.
    (0, {"train.activation_reg": 2.0}),
    (0, {"train.temporal_activation_reg": 1.0}),
])
def test_each_method_changes_the_training_loss_but_not_evaluation(tiny_config, embed_dim, method):
    tiny_config.model.embed_dim = embed_dim
    config = tiny_config.copy_and_resolve_references()
    for name, value in method.items():
        section, field = name.split(".")
        config[section][field] = value
    models = [split_model(create_model(c, VOCAB)) for c in (config, tiny_config)]
    losses = [objective(c, *model)[0] for c, model in zip((config, tiny_config), models)]
    assert not np.array_equal(*losses)
    scored = [evaluate.sequence_nll(*model, WINDOWS[:, :-1], WINDOWS[:, 1:], None)[0] for model in models]
    np.testing.assert_array_equal(*scored)


def test_the_step_reports_the_cross_entropy_while_the_penalties_move_the_weights(tiny_config):
    """train_loss stays comparable with val_loss: the step returns the cross-entropy, while its update follows
    the gradient of the cross-entropy plus the penalties."""
    tiny_config.train.update(activation_reg=2.0, temporal_activation_reg=1.0)
    tiny_config.model.dropout = 0.0
    graphdef, params = split_model(create_model(tiny_config, VOCAB))
    ids, starts = jax.random.randint(KEY, (100,), 0, VOCAB), jnp.arange(0, 40, 10)
    tx = make_optimizer(tiny_config.train, 10)
    windows = ids[starts[:, None] + np.arange(tiny_config.data.seq_length + 1)]

    def cross_entropy(params):
        return train_step.loss_fn(graphdef, params, windows, "all", None, None)[1][0]

    state = train_step.initial_state(jax.tree.map(jnp.copy, params), tx, None)  # The step donates its params.
    expected32, expected64 = cross_entropy(params), in_float64(cross_entropy, params)
    state, loss = train_step.make_train_step(tiny_config, graphdef, tx)(state, ids, starts)
    assert_float32_accurate(loss, expected32, expected64, "the step's loss")
    tiny_config.train.update(activation_reg=0.0, temporal_activation_reg=0.0)
    plain_state, _ = train_step.make_train_step(tiny_config, graphdef, tx)(
        train_step.initial_state(params, tx, None), ids, starts
    )
    recurrent = [s.params["layers"][0]["recurrent_kernel"] for s in (state, plain_state)]  # The head gets no penalty.
    assert not np.array_equal(*recurrent)

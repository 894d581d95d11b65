import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from charlstm import cells, train_step
from charlstm.cells import gru
from charlstm.lstm.cell import lstm_cell
from charlstm.model import CharLSTM, create_model, split_model, train_step_flops
from tests.conftest import assert_float32_accurate, assert_one_line_error, in_float64, run_script


def test_output_shapes():
    model = CharLSTM(vocab_size=11, units=16, num_layers=2, rngs=nnx.Rngs(0))
    ids = jnp.zeros((3, 7), jnp.int32)
    logits, state = model(ids)
    assert logits.shape == (3, 7, 11)
    assert len(state) == 2 and all(h.shape == c.shape == (3, 16) for h, c in state)
    hs, _ = model.features(ids)
    assert hs.shape == (7, 3, 16)  # Time-major.


def assert_chunks_equal_one_call(model: CharLSTM, ids: jax.Array) -> None:
    """The model over ids[:, :4], then ids[:, 4:] from the state it ended in, equals one call over ids."""
    graphdef, params = split_model(model)
    first, state = model(ids[:, :4])
    second, _ = model(ids[:, 4:], state)

    def whole(params):
        return nnx.merge(graphdef, params)(ids)[0]

    expected32, expected64 = whole(params), in_float64(whole, params)
    assert_float32_accurate(jnp.concatenate([first, second], axis=1), expected32, expected64, "logits")


def test_cell_equals_the_textbook_lstm():
    units, key = 8, jax.random.key(1)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    kernel = jax.random.normal(k1, (units, 4 * units))
    h, c = jax.random.normal(k2, (2, 5, units))
    x_proj = jax.random.normal(k3, (5, 4 * units)) * 3

    def textbook(kernel, h, c, x_proj):
        i, f, g, o = jnp.split(x_proj + h @ kernel, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c_new), c_new

    expected32, expected64 = textbook(kernel, h, c, x_proj), in_float64(textbook, kernel, h, c, x_proj)
    assert_float32_accurate(lstm_cell(kernel, (h, c), x_proj), expected32, expected64, "lstm cell")


def test_state_carries_across_calls():
    model = CharLSTM(vocab_size=9, units=12, num_layers=2, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(0), (2, 10), 0, 9)
    assert_chunks_equal_one_call(model, ids)


def test_forget_gate_bias_starts_at_one():
    model = CharLSTM(vocab_size=5, units=4, num_layers=1, rngs=nnx.Rngs(0))
    bias = np.asarray(model.layers[0].bias[...])
    np.testing.assert_array_equal(bias, [0] * 4 + [1] * 4 + [0] * 8)


@pytest.mark.parametrize("cell", [c if c == "lstm" else pytest.param(c, marks=pytest.mark.slow) for c in cells.NAMES])
def test_every_cell_has_shapes_and_carries_state(cell):
    model = CharLSTM(vocab_size=9, units=12, num_layers=2, cell=cell, embed_dim=5, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(0), (2, 10), 0, 9)
    whole, state = model(ids)
    assert whole.shape == (2, 10, 9) and all(len(carry) == cells.CELLS[cell].carry_size for carry in state)
    assert model.layers[0].recurrent_kernel[...].shape == (12, cells.CELLS[cell].gates * 12)
    assert_chunks_equal_one_call(model, ids)


def test_gru_cell_equals_the_textbook_reset_after_gru():
    units = 6
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    kernel = jax.random.normal(k1, (units, 3 * units))
    h = jax.random.normal(k2, (4, units))
    x_proj = jax.random.normal(k3, (4, 3 * units))

    def textbook(kernel, h, x_proj):
        x_r, x_z, x_n = jnp.split(x_proj, 3, -1)
        u_r, u_z, u_n = jnp.split(kernel, 3, -1)
        r = jax.nn.sigmoid(x_r + h @ u_r)
        z = jax.nn.sigmoid(x_z + h @ u_z)
        n = jnp.tanh(x_n + r * (h @ u_n))
        return (1 - z) * n + z * h

    expected32, expected64 = textbook(kernel, h, x_proj), in_float64(textbook, kernel, h, x_proj)
    assert_float32_accurate(gru.step(kernel, (h,), x_proj)[0], expected32, expected64, "gru cell")


@pytest.mark.slow
@pytest.mark.parametrize("cell", cells.NAMES)
def test_every_cell_learns_a_repeated_text(cell):
    """A few Adam steps on one short text lower its loss, on one-hot ids and on an embedding: gradients
    reach every parameter of every registered cell."""
    ids = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]])
    for embed_dim in (0, 4):
        graphdef, params = split_model(CharLSTM(4, 8, 2, cell=cell, embed_dim=embed_dim, rngs=nnx.Rngs(0)))
        value_and_grad = jax.jit(jax.value_and_grad(functools.partial(mean_nll, graphdef, ids)))
        tx = optax.adam(1e-2)
        opt_state, (first, grads) = tx.init(params), value_and_grad(params)
        assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))
        for _ in range(5):
            updates, opt_state = tx.update(grads, opt_state)
            params = optax.apply_updates(params, updates)
            loss, grads = value_and_grad(params)
        assert loss < first


def mean_nll(graphdef, ids: jax.Array, params) -> jax.Array:
    """The model's mean NLL of each of ids `[batch, time]` after the ones before it."""
    logits, _ = nnx.merge(graphdef, params)(ids[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()


@pytest.mark.slow
def test_an_unknown_cell_is_one_line_naming_the_registered_ones(tmp_path):
    result = run_script("train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
                        "--config.model.cell=lstmp")
    assert_one_line_error(result, "model.cell='lstmp'", *map(repr, cells.NAMES))
    assert not (tmp_path / "run").exists()


def test_dropout_acts_in_training_only():
    model = CharLSTM(vocab_size=7, units=16, num_layers=2, dropout=0.5, weight_dropout=0.5, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), (3, 8), 0, 7)
    eval_a, _ = model(ids)
    eval_b, _ = model(ids)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = model(ids, dropout_key=jax.random.key(1))
    train_b, _ = model(ids, dropout_key=jax.random.key(2))
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(train_a, model(ids, dropout_key=jax.random.key(1))[0])
    plain = CharLSTM(vocab_size=7, units=16, num_layers=2, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(plain(ids, dropout_key=jax.random.key(1))[0], eval_a)


def forward_matmul_flops(jaxpr) -> int:
    """2 * (output size) * (contracted size) summed over the jaxpr's dot_generals, scan bodies counted
    once per step: the matmul FLOPs that the traced function runs."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracted, _), _ = eqn.params["dimension_numbers"]
            shape = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(shape[i] for i in contracted)
        repeats = eqn.params.get("length", 1)  # A scan runs its body `length` times.
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += repeats * forward_matmul_flops(sub)
    return total


@pytest.mark.parametrize(
    "cell, num_layers, embed_dim, objective",
    [("lstm", 1, 0, "all"), ("lstm", 2, 8, "last"), ("gru", 2, 0, "all"), ("rnn", 1, 4, "all")],
)
def test_train_step_flops_are_three_times_the_forward_matmuls(tiny_config, cell, num_layers, embed_dim, objective):
    """The benchmark's GFLOP/s count: three times the matmul FLOPs counted in the traced forward pass."""
    c = tiny_config
    c.model.cell, c.model.num_layers, c.model.embed_dim, c.train.objective = cell, num_layers, embed_dim, objective
    c.model.lstm_impl = "autodiff" if cell == "lstm" else "auto"  # A plain scan: its matmuls are visible.
    graphdef, params = split_model(create_model(c, 30))
    windows = jnp.zeros((c.train.batch_size, c.data.seq_length + 1), jnp.int32)
    loss = functools.partial(train_step.loss_fn, graphdef, objective=objective, dropout_key=None, carry=None)
    jaxpr = jax.make_jaxpr(lambda params: loss(params, windows))(params).jaxpr
    assert train_step_flops(c, 30) == 3 * forward_matmul_flops(jaxpr)

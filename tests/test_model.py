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
from charlstm.cells import gru, mogrifier
from charlstm.lstm.cell import lstm_cell
from charlstm.model import CharLSTM, create_model, split_model, train_step_flops
from tests.conftest import assert_float32_accurate, assert_one_line_error, in_float64, run_script

# What a cell needs besides its name to be more than another cell: the mogrifier's rounds.
CELL_FIELDS = {"mogrifier": {"mogrifier_rounds": 3}}


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
    model = CharLSTM(vocab_size=9, units=12, num_layers=2, cell=cell, embed_dim=5, **CELL_FIELDS.get(cell, {}),
                     rngs=nnx.Rngs(0))
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
        fields = CELL_FIELDS.get(cell, {})
        graphdef, params = split_model(CharLSTM(4, 8, 2, cell=cell, embed_dim=embed_dim, **fields, rngs=nnx.Rngs(0)))
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


@pytest.mark.parametrize("objective, fields", [
    ("all", {}),
    ("last", {"num_layers": 2, "embed_dim": 8}),
    ("all", {"cell": "gru", "num_layers": 2}),
    ("all", {"cell": "rnn", "embed_dim": 4}),
    ("all", {"cell": "mogrifier", "mogrifier_rounds": 3, "num_layers": 2}),
    ("all", {"cell": "mogrifier", "mogrifier_rounds": 2, "embed_dim": 4}),
    ("all", {"embed_dim": 8, "tie_weights": True}),
    ("last", {"embed_dim": 32, "tie_weights": True}),  # As many as tiny's units: no projection.
])
def test_train_step_flops_are_three_times_the_forward_matmuls(tiny_config, objective, fields):
    """The benchmark's GFLOP/s count: three times the matmul FLOPs counted in the traced forward pass."""
    c = tiny_config
    c.model.update(fields)
    c.train.objective = objective
    c.model.lstm_impl = "autodiff" if c.model.cell == "lstm" else "auto"  # A plain scan: its matmuls are visible.
    graphdef, params = split_model(create_model(c, 30))
    windows = jnp.zeros((c.train.batch_size, c.data.seq_length + 1), jnp.int32)
    loss = functools.partial(train_step.loss_fn, graphdef, objective=objective, dropout_key=None, carry=None)
    jaxpr = jax.make_jaxpr(lambda params: loss(params, windows))(params).jaxpr
    assert train_step_flops(c, 30) == 3 * forward_matmul_flops(jaxpr)


# The regularisation methods and the mogrifier.


@pytest.mark.parametrize("embed_dim", [0, 6])
def test_embed_dropout_drops_whole_characters_in_training_only(embed_dim):
    model = CharLSTM(vocab_size=7, units=16, num_layers=1, embed_dim=embed_dim, embed_dropout=0.5, rngs=nnx.Rngs(0))
    plain = CharLSTM(vocab_size=7, units=16, num_layers=1, embed_dim=embed_dim, rngs=nnx.Rngs(0))
    ids, key = jax.random.randint(jax.random.key(1), (3, 8), 0, 7), jax.random.key(2)
    np.testing.assert_array_equal(model(ids)[0], plain(ids)[0])
    np.testing.assert_array_equal(model(ids, dropout_key=key)[0], model(ids, dropout_key=key)[0])
    assert not np.allclose(model(ids, dropout_key=key)[0], plain(ids, dropout_key=key)[0])
    # Each character's row of the table the first layer reads is zeroed or scaled by 1 / (1 - 0.5).
    x, kernel = model.first_input(jnp.arange(7)[:, None], key)
    rows, table = (x[:, 0], model.embed.embedding[...]) if embed_dim else (kernel, model.layers[0].input_kernel[...])
    kept = np.asarray(jnp.any(rows != 0, axis=-1))
    assert 0 < kept.sum() < 7
    np.testing.assert_array_equal(rows, np.where(kept[:, None], table * 2, 0))


@pytest.mark.parametrize("embed_dim", [6, 16])  # Projected from 16 units, and not.
def test_a_tied_head_is_the_embedding_and_takes_both_gradients(embed_dim):
    model = CharLSTM(vocab_size=7, units=16, num_layers=1, embed_dim=embed_dim, tie_weights=True, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    assert params["head"].keys() == ({"bias", "projection"} if embed_dim != 16 else {"bias"})
    ids = jax.random.randint(jax.random.key(1), (3, 9), 0, 7)

    def loss(params, head_embedding):
        """The mean NLL with the head reading `head_embedding` in place of the embedding."""
        m = nnx.merge(graphdef, params)
        logits = m.head(m.features(ids[:, :-1])[0], head_embedding)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:].T).mean()

    @jax.jit
    def input_plus_output_gradient(params, embedding):
        to_input, to_output = jax.grad(loss, argnums=(0, 1))(params, embedding)
        return to_input["embed"]["embedding"] + to_output

    embedding = params["embed"]["embedding"]
    assert_float32_accurate(mean_nll(graphdef, ids, params), loss(params, embedding),
                            in_float64(loss, params, embedding), "the tied head's loss")
    tied = jax.jit(jax.grad(functools.partial(mean_nll, graphdef, ids)))(params)["embed"]["embedding"]
    expected32 = input_plus_output_gradient(params, embedding)
    expected64 = in_float64(input_plus_output_gradient, params, embedding)
    assert_float32_accurate(tied, expected32, expected64, "the tied embedding's gradient")


def test_a_mogrifier_without_rounds_is_the_lstm():
    ids = jax.random.randint(jax.random.key(0), (2, 10), 0, 9)
    lstm, mog = (CharLSTM(9, 12, 2, cell=cell, embed_dim=5, rngs=nnx.Rngs(0)) for cell in ("lstm", "mogrifier"))
    lstm_params, mog_params = split_model(lstm)[1], split_model(mog)[1]
    assert jax.tree.structure(lstm_params) == jax.tree.structure(mog_params)
    for a, b in zip(jax.tree.leaves(lstm_params), jax.tree.leaves(mog_params)):
        np.testing.assert_array_equal(a, b)
    for got, want in zip(jax.tree.leaves(mog(ids)), jax.tree.leaves(lstm(ids))):
        np.testing.assert_array_equal(got, want)


def test_mogrifier_rounds_follow_the_papers_equations():
    """One step of four rounds against Melis et al. (2020): x^i = 2 sigmoid(h^(i-1) Q^i) x^(i-2) for odd i,
    h^i = 2 sigmoid(x^(i-1) R^i) h^(i-2) for even i, then the LSTM on x^3 and h^4."""
    units, n_in, batch = 6, 5, 3
    k = jax.random.split(jax.random.key(3), 9)
    weights = [jax.random.normal(k[0], (n_in, 4 * units)), jax.random.normal(k[1], (units, 4 * units)),
               jax.random.normal(k[2], (4 * units,))]
    state = [jax.random.normal(k[3], (batch, units)), jax.random.normal(k[4], (batch, units)),
             jax.random.normal(k[5], (batch, n_in))]
    rounds = [jax.random.normal(k[6 + i % 3], (units, n_in) if i % 2 == 0 else (n_in, units)) for i in range(4)]

    def textbook(input_kernel, recurrent_kernel, bias, h, c, x, q1, r2, q3, r4):
        x1 = 2 * jax.nn.sigmoid(h @ q1) * x
        h2 = 2 * jax.nn.sigmoid(x1 @ r2) * h
        x3 = 2 * jax.nn.sigmoid(h2 @ q3) * x1
        h4 = 2 * jax.nn.sigmoid(x3 @ r4) * h2
        i, f, g, o = jnp.split(x3 @ input_kernel + h4 @ recurrent_kernel + bias, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def ours(input_kernel, recurrent_kernel, bias, h, c, x, *kernels):
        return mogrifier.scan("auto", input_kernel, recurrent_kernel, bias, (h, c), x[None], *kernels)[1]

    arrays = (*weights, *state, *rounds)
    assert_float32_accurate(ours(*arrays), textbook(*arrays), in_float64(textbook, *arrays), "mogrifier step")


@pytest.mark.slow
@pytest.mark.parametrize("override, words", [  # The other refusals: test_config.py, in-process.
    ("--config.model.tie_weights=True", ("model.tie_weights=True", "model.embed_dim=64")),
])
def test_a_method_missing_what_it_needs_stops_train_py_in_one_line(tmp_path, override, words):
    result = run_script("train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"), override)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "run").exists()

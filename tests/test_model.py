import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm.model import CharLSTM, lstm_cell


def test_output_shapes():
    model = CharLSTM(vocab_size=11, units=16, num_layers=2, rngs=nnx.Rngs(0))
    ids = jnp.zeros((3, 7), jnp.int32)
    logits, state = model(ids)
    assert logits.shape == (3, 7, 11)
    assert len(state) == 2 and all(h.shape == c.shape == (3, 16) for h, c in state)
    hs, _ = model.features(ids)
    assert hs.shape == (3, 7, 16)


def test_cell_equals_the_textbook_lstm():
    units, key = 8, jax.random.key(1)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    kernel = jax.random.normal(k1, (units, 4 * units))
    h, c = jax.random.normal(k2, (2, 5, units))
    x_proj = jax.random.normal(k3, (5, 4 * units)) * 3
    z = x_proj + h @ kernel
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_ref = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_ref = jax.nn.sigmoid(o) * jnp.tanh(c_ref)
    h_new, c_new = lstm_cell(kernel, (h, c), x_proj)
    np.testing.assert_allclose(c_new, c_ref, atol=1e-6)
    np.testing.assert_allclose(h_new, h_ref, atol=1e-6)


def test_state_carries_across_calls():
    model = CharLSTM(vocab_size=9, units=12, num_layers=2, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(0), (2, 10), 0, 9)
    whole, _ = model(ids)
    first, state = model(ids[:, :4])
    second, _ = model(ids[:, 4:], state)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, atol=1e-5)


def test_forget_gate_bias_starts_at_one():
    model = CharLSTM(vocab_size=5, units=4, num_layers=1, rngs=nnx.Rngs(0))
    bias = np.asarray(model.layers[0].bias[...])
    np.testing.assert_array_equal(bias, [0] * 4 + [1] * 4 + [0] * 8)

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from charlstm import cudnn_lstm, fused_lstm, model, native_lstm
from charlstm.fused_lstm import lstm_scan_fused

# The autodiff reference: jax.grad through lax.scan of model.lstm_cell.
reference_scan = model.lstm_scan_autodiff


@pytest.fixture(params=["native", "xla"])
def path(request, monkeypatch):
    """Runs a test on each implementation of lstm_scan_fused: the compiled CPU kernel and the XLA scan
    (and keeps the model off cuDNN, so that on a CUDA GPU too the model-level tests check this module).
    jit's caches are cleared around it: a function jitted under one path must not serve the other."""
    monkeypatch.setattr(cudnn_lstm, "available", lambda: False)
    if request.param == "native":
        assert native_lstm.available(), "the compiled LSTM kernel did not build: see setup.py"
    else:
        monkeypatch.setattr(fused_lstm, "_use_native", lambda *arrays: False)
    jax.clear_caches()
    yield request.param
    jax.clear_caches()


def random_problem(batch=3, time=7, units=5, dtype=jnp.float32, seed=0, vocab=0):
    """Kernel `[units, 4*units]`, carry (h, c) `[batch, units]`, x (x_proj `[time, batch, 4*units]`, or
    with `vocab` a table `[vocab, 4*units]`), ids (None, or `[time, batch]` in [0, vocab)), and random
    cotangents for hs `[time, batch, units]` and the final (h, c)."""
    k = jax.random.split(jax.random.key(seed), 8)
    normal = lambda key, shape, scale=1.0: (scale * jax.random.normal(key, shape)).astype(dtype)
    kernel = normal(k[0], (units, 4 * units), 0.5)
    carry = (normal(k[1], (batch, units)), normal(k[2], (batch, units)))
    x = normal(k[3], (vocab, 4 * units) if vocab else (time, batch, 4 * units), 2.0)
    ids = jax.random.randint(k[7], (time, batch), 0, vocab) if vocab else None
    cotangents = (normal(k[4], (time, batch, units)), (normal(k[5], (batch, units)), normal(k[6], (batch, units))))
    return kernel, carry, x, ids, cotangents


def outputs_and_grads(scan, kernel, carry, x, ids, cotangents):
    """The scan's outputs and the gradients w.r.t. (kernel, carry, x) of <outputs, cotangents>."""
    outputs, vjp = jax.vjp(lambda kernel, carry, x: scan(kernel, carry, x, ids), kernel, carry, x)
    return outputs, vjp(cotangents)


def assert_trees_close(expected, actual, tolerance: float = 1e-5) -> None:
    """Every array of `actual` equals its twin in `expected` to `tolerance`, absolute and relative (NaN
    matching NaN)."""
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True):
        np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance)


# (batch, time, units, vocab): small problems with x_proj and with a table gathered by id, and ones
# whose 37 rows (over 30 steps) and 128 gate columns the kernel splits in two on two cores or more.
PROBLEMS = [(3, 7, 5, 0), (3, 7, 5, 4), (37, 30, 32, 0), (37, 30, 32, 9)]


@pytest.mark.parametrize("batch, time, units, vocab", PROBLEMS)
def test_outputs_and_gradients_equal_autodiff(path, batch, time, units, vocab):
    problem = random_problem(batch=batch, time=time, units=units, vocab=vocab)
    expected = outputs_and_grads(reference_scan, *problem)
    actual = jax.jit(functools.partial(outputs_and_grads, lstm_scan_fused))(*problem)
    assert_trees_close(expected, actual)


def test_final_carry_cotangent_alone_reaches_every_input(path):
    """Stateful training and generation use the returned carry: its gradient must not be dropped."""
    kernel, carry, x_proj, ids, (d_hs, d_carry) = random_problem(seed=1)
    cotangents = (jnp.zeros_like(d_hs), d_carry)
    _, expected = outputs_and_grads(reference_scan, kernel, carry, x_proj, ids, cotangents)
    _, actual = outputs_and_grads(lstm_scan_fused, kernel, carry, x_proj, ids, cotangents)
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocab", [0, 4])
def test_bfloat16_keeps_dtypes_and_stays_close_to_float32(vocab):
    problem = random_problem(dtype=jnp.bfloat16, vocab=vocab)
    upcast = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, problem)
    expected = outputs_and_grads(reference_scan, *upcast)
    actual = jax.jit(functools.partial(outputs_and_grads, lstm_scan_fused))(*problem)
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True):
        assert got.dtype == jnp.bfloat16
        scale = float(np.abs(np.asarray(want, np.float32)).max())
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=0.05 * scale)


def charlstm_value_and_grads(stateful: bool):
    """Loss and gradients (params, initial state) of a two-layer CharLSTM: ids into the first layer,
    features into the second, a head, and the final state's values in the loss. For comparing the
    implementations of the LSTM layer on the whole model."""
    net = model.CharLSTM(vocab_size=9, units=8, num_layers=2, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), (4, 11), 0, 9)
    state = jax.tree.map(lambda x: x + 0.3, net.initial_state(4)) if stateful else None
    graphdef, params = nnx.split(net, nnx.Param)

    def loss(params, state):
        logits, final = nnx.merge(graphdef, params)(ids[:, :-1], state)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()
        return ce + sum(jnp.sum(h) * 0.1 + jnp.sum(c) * 0.2 for h, c in final)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, state)


@pytest.mark.parametrize("stateful", [False, True])
def test_charlstm_loss_gradients_equal_autodiff(monkeypatch, path, stateful):
    """The whole model (two layers, embedding-free input gather, head) trains on the same gradients."""
    actual = charlstm_value_and_grads(stateful)
    monkeypatch.setattr(model, "lstm_scan", reference_scan)
    expected = charlstm_value_and_grads(stateful)
    assert_trees_close(expected, actual)


@pytest.mark.parametrize("batch, time, units, vocab", [(2, 1, 3, 0), *PROBLEMS])
def test_outputs_without_gradients_equal_the_cell_scan(path, batch, time, units, vocab):
    """Evaluation and sampling call the scan without differentiating it: the same hs and final (h, c)."""
    kernel, carry, x, ids, _ = random_problem(batch=batch, time=time, units=units, seed=2, vocab=vocab)
    expected = reference_scan(kernel, carry, x, ids)
    actual = jax.jit(lstm_scan_fused)(kernel, carry, x, ids)
    assert_trees_close(expected, actual)


@pytest.mark.parametrize("value", [1e30, -np.inf, np.nan])
def test_huge_infinite_and_nan_inputs_give_what_the_cell_scan_gives(path, value):
    """The gates' tanh saturates to +-1 for huge and infinite pre-activations and keeps NaN, like jnp.tanh:
    a diverged run shows NaN rather than hiding it."""
    kernel, carry, x_proj, _, _ = random_problem(seed=3)
    x_proj = x_proj.at[2, 1].set(value)  # One row's inputs at step 2.
    expected = reference_scan(kernel, carry, x_proj, None)
    actual = jax.jit(lstm_scan_fused)(kernel, carry, x_proj, None)
    assert np.isnan(expected[0]).any() == np.isnan(value)
    assert_trees_close(expected, actual)  # NaN where NaN is expected.


@pytest.mark.parametrize("vocab", [0, 4])
@pytest.mark.parametrize("dtype, kernel_runs", [(jnp.float32, True), (jnp.bfloat16, False)])
def test_the_compiled_kernel_runs_for_float32_on_one_cpu(dtype, kernel_runs, vocab):
    """Training and inference on one CPU device in float32 call the kernel; bfloat16 keeps the XLA scan."""
    kernel, carry, x, ids, cotangents = random_problem(dtype=dtype, vocab=vocab)
    train = jax.jit(functools.partial(outputs_and_grads, lstm_scan_fused)).lower(kernel, carry, x, ids, cotangents)
    infer = jax.jit(lstm_scan_fused).lower(kernel, carry, x, ids)
    assert (native_lstm.FORWARD in train.as_text() and native_lstm.BACKWARD in train.as_text()) == kernel_runs
    assert (native_lstm.INFERENCE in infer.as_text()) == kernel_runs


def test_kernel_gradients_are_the_same_bits_every_run():
    """Threads sum their partial tables in a fixed order: same config and seed, same numbers."""
    problem = random_problem(batch=37, time=30, units=32, vocab=9)
    grads = jax.jit(functools.partial(outputs_and_grads, lstm_scan_fused))
    first, second = grads(*problem), grads(*problem)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)


def test_kernel_rejects_mismatched_shapes():
    """The kernel checks its buffers' shapes and fails with a message instead of reading out of bounds."""
    kernel, (h, c), x_proj, _, _ = random_problem()
    with pytest.raises(Exception, match="lstm: expected kernel"):
        jax.block_until_ready(native_lstm.inference(kernel, h[:2], c, x_proj, None))


def test_kernel_openblas_stays_out_of_the_global_symbol_scope():
    """The kernel's OpenBLAS is loaded privately, so other copies' users (SciPy's) do not bind to it."""
    assert native_lstm.available()
    with pytest.raises(AttributeError):
        ctypes.CDLL(None).scipy_cblas_sgemm

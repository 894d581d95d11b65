"""The cuDNN LSTM path. Off a CUDA GPU, `jax.experimental.rnn.lstm` is replaced by jax's own reference of
its mathematics (`rnn.lstm_ref` on the weights unpacked from cuDNN's flat layout), which checks our
weight packing, transposes, one-hot input and wiring into the model, and the real call is traced for
shapes only; on a CUDA GPU the real call is checked against autodiff."""

import functools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.experimental import rnn

from charlstm import cudnn_lstm, model
from tests.test_fused_lstm import assert_trees_close, charlstm_value_and_grads

on_cuda = pytest.mark.skipif(not cudnn_lstm.available(), reason="needs one CUDA GPU")


def lstm_from_reference(calls: list, x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers,
                        dropout, bidirectional, precision=None):
    """rnn.lstm's arguments and results, computed by rnn.lstm_ref; appends to `calls` to show it ran."""
    calls.append(input_size)
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, num_layers, dropout,
                        bidirectional)


@pytest.fixture
def reference_cudnn(monkeypatch) -> list:
    """Makes the model take the cuDNN path for float32 on this machine, with rnn.lstm_ref behind it;
    returns the list of calls made."""
    calls = []
    monkeypatch.setattr(cudnn_lstm, "available", lambda: True)
    monkeypatch.setattr(rnn, "lstm", functools.partial(lstm_from_reference, calls))
    return calls


def random_layer(batch=3, time=7, inputs=6, units=5, vocab=0, seed=0):
    """(input_kernel, recurrent_kernel, bias, (h, c), x): x features `[time, batch, inputs]`, or with
    `vocab` character ids `[time, batch]` and an input kernel of `vocab` rows."""
    k = jax.random.split(jax.random.key(seed), 6)
    normal = lambda key, shape, scale=1.0: scale * jax.random.normal(key, shape)
    input_kernel = normal(k[0], (vocab or inputs, 4 * units), 0.5)
    weights = (input_kernel, normal(k[1], (units, 4 * units), 0.5), normal(k[2], (4 * units,)))
    carry = (normal(k[3], (batch, units)), normal(k[4], (batch, units)))
    x = jax.random.randint(k[5], (time, batch), 0, vocab) if vocab else normal(k[5], (time, batch, inputs))
    return *weights, carry, x


def our_lstm(input_kernel, recurrent_kernel, bias, carry, x):
    """The same layer the way model.RecurrentLayer computes it off the cuDNN path, differentiated by autodiff."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return model.lstm_scan_autodiff(recurrent_kernel, carry, input_kernel + bias, x)
    return model.lstm_scan_autodiff(recurrent_kernel, carry, x @ input_kernel + bias, None)


def outputs_and_grads(lstm, input_kernel, recurrent_kernel, bias, carry, x):
    """The layer's outputs and the gradients of a weighted sum of them w.r.t. its weights, carry and
    (float) inputs."""
    float_x = not jnp.issubdtype(x.dtype, jnp.integer)

    def loss(weights, carry, features):
        hs, (h, c) = lstm(*weights, carry, features if float_x else x)
        return jnp.sum(jnp.sin(hs)) + jnp.sum(h * 0.3) + jnp.sum(c * 0.7), (hs, h, c)

    (_, outputs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        (input_kernel, recurrent_kernel, bias), carry, x if float_x else jnp.zeros(())
    )
    return outputs, grads


@pytest.mark.parametrize("vocab", [0, 4])
def test_packed_weights_give_our_lstm_in_cudnn_mathematics(reference_cudnn, vocab):
    layer = random_layer(vocab=vocab)
    expected = outputs_and_grads(our_lstm, *layer)
    actual = outputs_and_grads(cudnn_lstm.lstm_scan, *layer)
    assert reference_cudnn == [vocab or 6]  # One call, with one-hot ids or the 6 features.
    assert_trees_close(expected, actual)


def test_charlstm_on_the_cudnn_path_trains_on_the_same_gradients(reference_cudnn, monkeypatch):
    actual = charlstm_value_and_grads(stateful=True)
    assert len(reference_cudnn) == 2  # One call per layer: the model took the cuDNN path.
    monkeypatch.setattr(cudnn_lstm, "available", lambda: False)
    expected = charlstm_value_and_grads(stateful=True)
    assert_trees_close(expected, actual)


def test_bfloat16_never_takes_the_cudnn_path(reference_cudnn):
    """jax's cuDNN binding is float32 only: bfloat16 arrays (mixed precision) or bfloat16 matmuls (jax's
    default matmul precision 'bfloat16') keep fused_lstm's XLA scan."""
    weight = jnp.zeros((2, 8))
    assert cudnn_lstm.serves(weight) and not cudnn_lstm.serves(weight.astype(jnp.bfloat16))
    with jax.default_matmul_precision("bfloat16"):
        assert not cudnn_lstm.serves(weight)


@on_cuda
@pytest.mark.parametrize("vocab", [0, 4])
def test_cudnn_agrees_with_autodiff_on_a_cuda_gpu(vocab):
    """Under the suite's 'highest' matmul precision (conftest), so cuDNN computes in full float32. Two
    float32 summation orders over 30 steps: on a CPU, float32 autodiff here already misses float64's
    values at a 1e-5 tolerance (by up to 1.4 times it), hence 1e-4."""
    layer = random_layer(batch=37, time=30, units=32, vocab=vocab)
    expected = outputs_and_grads(our_lstm, *layer)
    actual = jax.jit(functools.partial(outputs_and_grads, cudnn_lstm.lstm_scan))(*layer)
    assert_trees_close(expected, actual, tolerance=1e-4)


@on_cuda
def test_charlstm_calls_cudnn_on_a_cuda_gpu():
    net = model.CharLSTM(vocab_size=9, units=8, num_layers=1, rngs=nnx.Rngs(0))
    ids = jnp.zeros((2, 5), jnp.int32)
    assert "dnn_rnn_ffi" in jax.jit(lambda ids: net(ids)[0]).lower(ids).as_text()


@pytest.mark.parametrize("vocab", [0, 4])
def test_the_real_cudnn_call_traces_to_our_layers_shapes(monkeypatch, vocab):
    """The real rnn.lstm traced without running (jax.eval_shape): our arguments bind to it, and its
    forward and backward rules give our layer's shapes and dtypes. Sizing cuDNN's scratch buffers needs
    a GPU, so off one a stand-in size serves."""
    monkeypatch.setattr(rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", lambda *sizes: (1, 1),
                        raising=False)
    layer = random_layer(vocab=vocab)
    expected = jax.eval_shape(functools.partial(outputs_and_grads, our_lstm), *layer)
    actual = jax.eval_shape(functools.partial(outputs_and_grads, cudnn_lstm.lstm_scan), *layer)
    assert actual == expected

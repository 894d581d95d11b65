"""Every LSTM implementation (charlstm.lstm), chosen by name, against autodiff through the cell: values,
gradients and the edge cases the registry settles for all of them. Off a CUDA GPU, cuDNN's call
(`jax.experimental.rnn.lstm`) is replaced by jax's own reference of its mathematics (`rnn.lstm_ref` on
the weights unpacked from cuDNN's flat layout), which checks our packing, transposes and one-hot input;
on a CUDA GPU the real call runs."""

import ctypes
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.experimental import rnn

from charlstm import lstm, model
from charlstm.errors import CharLSTMError
from charlstm.lstm import cpu_kernel, cudnn
from tests.conftest import assert_float32_accurate, in_float64

ON_CUDA = cudnn.unavailable(jnp.dtype("float32")) is None
on_cuda = pytest.mark.skipif(not ON_CUDA, reason="needs one CUDA GPU")
reference = functools.partial(lstm.lstm_scan, "autodiff")


def lstm_from_reference(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout,
                        bidirectional, precision=None):
    """rnn.lstm's results, computed by jax's reference of cuDNN's mathematics."""
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, num_layers, dropout,
                        bidirectional)


# The quick tier checks the implementation that runs here by default; the slow tier every one.
DEFAULT = lstm.select("auto", jnp.dtype("float32"))


def by_tier(names) -> list:
    """`names` as pytest params, all but DEFAULT marked slow."""
    return [n if n == DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in names]


# The CPU kernel with each copy of its loops this CPU runs but the best (which "cpu_kernel" runs), by name.
OTHER_LOOPS = cpu_kernel.loops_here()[1:] if cpu_kernel.available() else []
KERNEL_COPIES = ["cpu_kernel", *(pytest.param(f"cpu_kernel:{name}", marks=pytest.mark.slow) for name in OTHER_LOOPS)]


@pytest.fixture(params=[*by_tier(name for name in lstm.IMPLEMENTATIONS if name != "cpu_kernel"), *KERNEL_COPIES])
def scan(request, monkeypatch):
    """The layer through each implementation by name, where it runs here; cuDNN off a CUDA GPU with jax's
    reference mathematics in place of the library call; the CPU kernel also with each other copy of its loops."""
    yield from scan_named(request.param, monkeypatch)


@pytest.fixture(params=KERNEL_COPIES)
def kernel_scan(request, monkeypatch):
    """The layer through the CPU kernel, with each copy of its loops."""
    yield from scan_named(request.param, monkeypatch)


def scan_named(param: str, monkeypatch):
    """The layer through the implementation `param` names ('cpu_kernel:avx2': the kernel with those loops)."""
    name, _, loops = param.partition(":")
    if name == "cudnn" and not ON_CUDA:
        monkeypatch.setattr(rnn, "lstm", lstm_from_reference)
        yield functools.partial(lstm.with_edges_settled, cudnn.lstm_scan)
        return
    if reason := lstm.IMPLEMENTATIONS[name].unavailable(jnp.dtype("float32")):
        pytest.skip(f"{name} cannot run here: {reason}")
    best = cpu_kernel.loops_in_use() if loops else None
    if loops:
        cpu_kernel.use_loops(loops)
    yield functools.partial(lstm.lstm_scan, name)
    if best:
        cpu_kernel.use_loops(best)


def random_layer(batch=3, time=7, units=5, vocab=0, inputs=6, seed=0, dtype=jnp.float32):
    """(input_kernel, recurrent_kernel, bias, (h, c), x) and cotangents for hs and the final (h, c): x is
    character ids `[time, batch]` in [0, vocab) with `vocab`, else features `[time, batch, inputs]`."""
    k = jax.random.split(jax.random.key(seed), 9)
    normal = lambda key, shape, scale=1.0: (scale * jax.random.normal(key, shape)).astype(dtype)
    weights = (normal(k[0], (vocab or inputs, 4 * units), 0.5), normal(k[1], (units, 4 * units), 0.5),
               normal(k[2], (4 * units,)))
    carry = (normal(k[3], (batch, units)), normal(k[4], (batch, units)))
    x = jax.random.randint(k[5], (time, batch), 0, vocab) if vocab else normal(k[5], (time, batch, inputs), 2.0)
    cotangents = (normal(k[6], (time, batch, units)), (normal(k[7], (batch, units)), normal(k[8], (batch, units))))
    return (*weights, carry, x), cotangents


def outputs_and_grads(scan, layer, cotangents):
    """The scan's outputs and the gradients of <outputs, cotangents> w.r.t. the weights, the carry and
    (float) inputs."""
    *weights, carry, x = layer
    if jnp.issubdtype(x.dtype, jnp.integer):
        outputs, vjp = jax.vjp(lambda w, carry: scan(*w, carry, x), weights, carry)
    else:
        outputs, vjp = jax.vjp(lambda w, carry, x: scan(*w, carry, x), weights, carry, x)
    return outputs, vjp(cotangents)


# (test, problem) -> the float32 and float64 reference results, computed once for all implementations.
_REFERENCES: dict = {}


def assert_equals_reference(scan_fn, function, *args, problem: tuple) -> None:
    """`function(scan_fn, *args)` is as close to the float64 reference (autodiff through the cell) as
    the float32 reference is, within float32_tolerance; `problem` names `args` for the cache."""
    if problem not in _REFERENCES:
        _REFERENCES[problem] = function(reference, *args), in_float64(functools.partial(function, reference), *args)
    actual = jax.jit(functools.partial(function, scan_fn))(*args)
    assert_float32_accurate(actual, *_REFERENCES[problem], f"lstm {problem}")


def call(scan_fn, *layer):
    return scan_fn(*layer)


# (batch, time, units, vocab): features and ids, small, and 64 units over 6 rows.
PROBLEMS = [(3, 7, 5, 0), (3, 7, 5, 4), (6, 3, 64, 5)]
# The CPU kernel's other paths: 64 units, whose recurrent matmul it tiles itself both ways (AVX-512 loops), over
# weights packed (5 steps) or read in place (1 step), in row tiles of 4 and short ones; and 37 rows over 30 steps
# with 128 gate columns, which it splits into two blocks of rows on two cores or more.
KERNEL_PROBLEMS = [(7, 5, 64, 0), (5, 1, 64, 5), *(pytest.param(37, 30, 32, v, marks=pytest.mark.slow) for v in (0, 9))]


@pytest.mark.parametrize("batch, time, units, vocab", PROBLEMS)
def test_outputs_and_gradients_equal_autodiff(scan, batch, time, units, vocab):
    layer, cotangents = random_layer(batch=batch, time=time, units=units, vocab=vocab)
    assert_equals_reference(scan, outputs_and_grads, layer, cotangents, problem=("grads", batch, time, units, vocab))


def test_final_carry_cotangent_alone_reaches_every_input(scan):
    """Stateful training and generation use the returned carry: its gradient must not be dropped."""
    layer, (d_hs, d_carry) = random_layer(seed=1)
    cotangents = (jnp.zeros_like(d_hs), d_carry)
    _, expected = outputs_and_grads(reference, layer, cotangents)
    for want in jax.tree.leaves(expected):
        assert np.abs(want).max() > 0
    assert_equals_reference(scan, outputs_and_grads, layer, cotangents, problem=("final carry",))


@pytest.mark.parametrize("batch, time, units, vocab", [(2, 1, 3, 0), *PROBLEMS])
def test_outputs_without_gradients_equal_autodiff(scan, batch, time, units, vocab):
    """Evaluation and sampling call the layer without differentiating it: the same hs and final (h, c)."""
    layer, _ = random_layer(batch=batch, time=time, units=units, vocab=vocab, seed=2)
    assert_equals_reference(scan, call, *layer, problem=("values", batch, time, units, vocab))


@pytest.mark.parametrize("batch, time, units, vocab", KERNEL_PROBLEMS)
def test_the_kernels_tiles_and_row_blocks_equal_autodiff(kernel_scan, batch, time, units, vocab):
    """Outputs and gradients, and outputs alone (inference's handler), on the kernel's other paths."""
    layer, cotangents = random_layer(batch=batch, time=time, units=units, vocab=vocab)
    problem = (batch, time, units, vocab)
    assert_equals_reference(kernel_scan, outputs_and_grads, layer, cotangents, problem=("kernel grads", *problem))
    assert_equals_reference(kernel_scan, call, *layer, problem=("kernel values", *problem))


@pytest.mark.parametrize("value", [1e30, -np.inf, np.nan])
def test_huge_infinite_and_nan_inputs_give_what_autodiff_gives(scan, value):
    """The gates saturate for huge and infinite pre-activations and keep NaN: a diverged run shows NaN."""
    (*weights, carry, x), _ = random_layer(seed=3)
    x = x.at[2, 1, 0].set(value)  # One feature of one row at step 2: its pre-activations become +-value.
    assert np.isnan(reference(*weights, carry, x)[0]).any() == np.isnan(value)
    assert_equals_reference(scan, call, *weights, carry, x, problem=("extreme input", repr(value)))


def test_ids_outside_the_vocabulary_are_clipped_alike_everywhere(scan):
    """-1, -9, vocab and vocab + 5 give the values and gradients of the nearest valid id's one-hot row
    (unsettled, jnp would wrap -1 and the CPU kernel clamp it; XLA would drop a gradient the kernel adds)."""
    (input_kernel, *rest, carry, ids), cotangents = random_layer(vocab=4, seed=4)
    ids = ids.at[0, 0].set(-1).at[1, 2].set(-9).at[3, 1].set(4).at[5, 0].set(9)
    one_hot = np.asarray(jax.nn.one_hot(np.clip(ids, 0, 3), 4))
    layer = (input_kernel, *rest, carry, ids)

    def through_one_hot(input_kernel, recurrent_kernel, bias, carry, ids):
        return reference(input_kernel, recurrent_kernel, bias, carry, one_hot.astype(input_kernel.dtype))

    expected32 = outputs_and_grads(through_one_hot, layer, cotangents)
    expected64 = in_float64(functools.partial(outputs_and_grads, through_one_hot), layer, cotangents)
    assert_float32_accurate(outputs_and_grads(scan, layer, cotangents), expected32, expected64, "clipped ids")


@pytest.mark.parametrize("time, batch", [(0, 3), (4, 0)])
def test_no_steps_or_no_rows_give_empty_outputs_and_the_carry(scan, time, batch):
    layer, _ = random_layer(batch=batch, time=time, vocab=4)
    hs, carry = jax.jit(scan)(*layer)
    assert hs.shape == (time, batch, 5)
    for want, got in zip(layer[3], carry, strict=True):
        np.testing.assert_array_equal(got, want)  # Passed through, untouched.
    grads = jax.grad(lambda carry: jnp.sum(scan(*layer[:3], carry, layer[4])[1][1]))(layer[3])
    np.testing.assert_array_equal(grads[1], np.ones((batch, 5)))  # The carry passes through unchanged.


def test_vmap_over_the_layer_equals_one_call_per_element(scan):
    """jax.vmap over a leading axis of the inputs (e.g. an ensemble's carries) equals separate calls."""
    layers = [random_layer(vocab=4, seed=seed)[0] for seed in (5, 6)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)

    def per_element(scan_fn, *stacked):
        layers = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(2)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *[scan_fn(*layer) for layer in layers])

    reference_per_element = functools.partial(per_element, reference)
    expected32, expected64 = reference_per_element(*stacked), in_float64(reference_per_element, *stacked)
    assert_float32_accurate(jax.jit(jax.vmap(scan))(*stacked), expected32, expected64, "vmap")


@pytest.mark.parametrize("name", ["xla", pytest.param("autodiff", marks=pytest.mark.slow)])
@pytest.mark.parametrize("vocab", [0, 4])
def test_bfloat16_keeps_dtypes_and_stays_close_to_float32(name, vocab):
    """The implementations that run in bfloat16 (mixed precision) return bfloat16 values and gradients
    within 5% of the largest float32 value (bfloat16 keeps 8 bits of mantissa)."""
    layer, cotangents = random_layer(dtype=jnp.bfloat16, vocab=vocab)
    upcast = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                          (layer, cotangents))
    expected = outputs_and_grads(reference, *upcast)
    actual = jax.jit(functools.partial(outputs_and_grads, functools.partial(lstm.lstm_scan, name)))(layer, cotangents)
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True):
        assert got.dtype == jnp.bfloat16
        scale = float(np.abs(np.asarray(want, np.float32)).max())
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=0.05 * scale)


def charlstm_value_and_grads(lstm_impl: str, stateful: bool):
    """Loss and gradients (params, initial state) of a two-layer CharLSTM (ids into the first layer,
    features into the second, a head, the final state's values in the loss) on `lstm_impl`, and the
    function that computes them from (params, state), to compute them again in float64."""
    net = model.CharLSTM(vocab_size=9, units=8, num_layers=2, lstm_impl=lstm_impl, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), (4, 11), 0, 9)
    state = jax.tree.map(lambda x: x + 0.3, net.initial_state(4)) if stateful else None
    graphdef, params = nnx.split(net, nnx.Param)

    def loss(params, state):
        logits, final = nnx.merge(graphdef, params)(ids[:, :-1], state)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()
        return ce + sum(jnp.sum(h) * 0.1 + jnp.sum(c) * 0.2 for h, c in final)

    value_and_grads = jax.value_and_grad(loss, argnums=(0, 1))
    return jax.jit(value_and_grads)(params, state), value_and_grads, (params, state)


@pytest.mark.parametrize("stateful", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", by_tier(n for n in lstm.IMPLEMENTATIONS if n != "autodiff"))
def test_charlstm_trains_on_the_same_gradients_with_every_implementation(name, stateful):
    if reason := lstm.IMPLEMENTATIONS[name].unavailable(jnp.dtype("float32")):
        pytest.skip(f"{name} cannot run here: {reason}")
    expected32, value_and_grads, arguments = charlstm_value_and_grads("autodiff", stateful)
    expected64 = in_float64(value_and_grads, *arguments)
    assert_float32_accurate(charlstm_value_and_grads(name, stateful)[0], expected32, expected64, "CharLSTM")


def test_auto_takes_the_first_that_runs_and_a_name_that_cannot_run_is_one_clear_error():
    float32 = jnp.dtype("float32")
    runnable = [n for n in lstm.AUTO_ORDER if lstm.IMPLEMENTATIONS[n].unavailable(float32) is None]
    assert lstm.select("auto", float32) == runnable[0]
    assert lstm.select("auto", jnp.dtype("bfloat16")) == "xla"  # cuDNN and the CPU kernel: float32 only.
    with pytest.raises(CharLSTMError, match=r"model.lstm_impl='cpu_kernel' cannot run here: .*bfloat16.*'xla'"):
        lstm.select("cpu_kernel", jnp.dtype("bfloat16"))
    with pytest.raises(CharLSTMError, match=r"model.lstm_impl='fast' is unknown: use one of 'auto', 'cudnn'"):
        lstm.select("fast", float32)
    if not ON_CUDA:
        with pytest.raises(CharLSTMError, match="'cudnn' cannot run here: it needs an NVIDIA GPU"):
            lstm.select("cudnn", float32)


@pytest.mark.skipif(jax.default_backend() != "cpu" or not cpu_kernel.available(), reason="needs the CPU kernel")
@pytest.mark.parametrize("vocab", [0, 4])
@pytest.mark.parametrize("dtype, kernel_runs", [(jnp.float32, True), (jnp.bfloat16, False)])
def test_auto_runs_the_compiled_kernel_for_float32_on_one_cpu(dtype, kernel_runs, vocab):
    """Training and inference on one CPU device in float32 call the kernel; bfloat16 keeps the XLA scan."""
    layer, cotangents = random_layer(dtype=dtype, vocab=vocab)
    auto = functools.partial(lstm.lstm_scan, "auto")
    train = jax.jit(functools.partial(outputs_and_grads, auto)).lower(layer, cotangents).as_text()
    infer = jax.jit(auto).lower(*layer).as_text()
    assert (cpu_kernel.FORWARD in train and cpu_kernel.BACKWARD in train) == kernel_runs
    assert (cpu_kernel.INFERENCE in infer) == kernel_runs


needs_kernel = pytest.mark.skipif(not cpu_kernel.available(), reason="the compiled CPU kernel is not loaded")


@needs_kernel
def test_every_copy_of_the_loops_reads_memory_at_a_finite_rate():
    """The benchmarks' memory-bound limit (cpu_kernel.read_bytes_per_second) runs in each copy."""
    in_use = cpu_kernel.loops_in_use()
    try:
        for loops in cpu_kernel.loops_here():
            cpu_kernel.use_loops(loops)
            assert 0 < cpu_kernel.read_bytes_per_second(1000, passes=10, repeats=1) < float("inf")
    finally:
        cpu_kernel.use_loops(in_use)


@needs_kernel
def test_kernel_gradients_are_the_same_bits_every_run():
    """Threads sum their partial tables in a fixed order: same config and seed, same numbers."""
    layer, cotangents = random_layer(batch=37, time=30, units=32, vocab=9)
    grads = jax.jit(functools.partial(outputs_and_grads, functools.partial(lstm.lstm_scan, "cpu_kernel")))
    for a, b in zip(jax.tree.leaves(grads(layer, cotangents)), jax.tree.leaves(grads(layer, cotangents)), strict=True):
        np.testing.assert_array_equal(a, b)


def kernel_call(target: str, results, *arguments):
    return jax.block_until_ready(jax.ffi.ffi_call(target, results)(*arguments))


@needs_kernel
def test_kernel_handlers_check_shapes_and_ranks_before_reading():
    """Mismatched shapes or ranks fail with a message instead of reading out of bounds."""
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    kernel, h, c, x, no_ids = (
        jnp.ones((5, 20)), jnp.ones((2, 5)), jnp.ones((3, 5)), jnp.ones((7, 3, 20)), jnp.zeros(0, jnp.int32)
    )
    with pytest.raises(Exception, match="lstm: expected kernel"):
        kernel_call(cpu_kernel.INFERENCE, (f32(7, 3, 5), f32(3, 5)), kernel, h, c, x, no_ids)
    flat = jnp.ones(7)  # hs of rank 1: the backward pass must not read its dimensions 1 and 2.
    results = (f32(7, 3, 20), f32(0, 20), f32(5, 20), f32(3, 5), f32(3, 5))
    with pytest.raises(Exception, match="lstm backward: expected"):
        kernel_call(cpu_kernel.BACKWARD, results, kernel, c, c, flat, flat, x, flat, c, c, no_ids)


@pytest.mark.slow
@needs_kernel
def test_kernel_without_openblas_fails_with_a_message_instead_of_crashing():
    """Handlers registered without OpenBLAS handed to them (the loader skipped) give an error."""
    program = """
import ctypes, importlib.util, jax, jax.numpy as jnp
library = ctypes.CDLL(importlib.util.find_spec("charlstm._lstm_cpu").origin)
jax.ffi.register_ffi_target("bare", jax.ffi.pycapsule(library.CharlstmLstmInference), platform="cpu")
f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
try:
    jax.block_until_ready(jax.ffi.ffi_call("bare", (f32(7, 3, 5), f32(3, 5)))(
        jnp.ones((5, 20)), jnp.ones((3, 5)), jnp.ones((3, 5)), jnp.ones((7, 3, 20)), jnp.zeros(0, jnp.int32)))
except Exception as error:
    print("error:", error)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OpenBLAS" in result.stdout


@needs_kernel
def test_kernel_openblas_stays_out_of_the_global_symbol_scope():
    """The kernel's OpenBLAS is loaded privately, so other copies' users (SciPy's) do not bind to it."""
    with pytest.raises(AttributeError):
        _ = ctypes.CDLL(None).scipy_cblas_sgemm


@on_cuda
def test_charlstm_calls_cudnn_on_a_cuda_gpu():
    net = model.CharLSTM(vocab_size=9, units=8, num_layers=1, rngs=nnx.Rngs(0))
    assert "dnn_rnn_ffi" in jax.jit(lambda ids: net(ids)[0]).lower(jnp.zeros((2, 5), jnp.int32)).as_text()


@pytest.mark.parametrize("vocab", [0, 4])
def test_the_real_cudnn_call_traces_to_our_layers_shapes(monkeypatch, vocab):
    """The real rnn.lstm traced without running (jax.eval_shape): our arguments bind to it, and its
    forward and backward rules give our layer's shapes and dtypes. Sizing cuDNN's scratch buffers needs
    a GPU, so off one a stand-in size serves."""
    monkeypatch.setattr(rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", lambda *sizes: (1, 1),
                        raising=False)
    layer, cotangents = random_layer(vocab=vocab)
    expected = jax.eval_shape(functools.partial(outputs_and_grads, reference), layer, cotangents)
    actual = jax.eval_shape(functools.partial(outputs_and_grads, cudnn.lstm_scan), layer, cotangents)
    assert actual == expected


@pytest.mark.skipif(
    os.environ.get("CI") != "true" or os.environ.get(cpu_kernel.DISABLE_ENV) == "off",
    reason="elsewhere the kernel is optional (no compiler): the tests that need it skip",
)
def test_ci_built_and_loaded_the_kernel():
    """CI has a compiler: a kernel that stopped compiling must fail there, not skip its tests."""
    assert cpu_kernel.available(), cpu_kernel.load_failure()


@needs_kernel
def test_kernel_loops_are_chosen_by_name_and_a_name_this_cpu_cannot_run_is_refused():
    """The best copy of the loops runs by default; use_loops switches; a bad name leaves the choice as it was."""
    here = cpu_kernel.loops_here()
    assert here[-1] == "baseline" and cpu_kernel.loops_in_use() == here[0]
    if here[0] in cpu_kernel.OPENBLAS_CORES:  # OpenBLAS runs kernels of the same instruction set.
        assert cpu_kernel.build_info()["openblas_core"] == cpu_kernel.OPENBLAS_CORES[here[0]]
    with pytest.raises(CharLSTMError, match="runs the kernel's .*baseline loops"):
        cpu_kernel.use_loops("neon")
    assert cpu_kernel.loops_in_use() == here[0]


@needs_kernel
def test_the_environment_names_the_loops_and_a_bad_name_stops_a_script_with_one_line(tmp_path):
    """The loops and OpenBLAS's core follow CHARLSTM_CPU_ISA (the environment's OPENBLAS_CORETYPE, meant for other
    OpenBLAS users, is left as it was); a name this CPU cannot run stops a script before any work."""
    program = ("import os; from charlstm.lstm import cpu_kernel; info = cpu_kernel.build_info(); "
               "print(info['loops'], info['openblas_core'], os.environ['OPENBLAS_CORETYPE'])")
    name = "avx2" if "avx2" in cpu_kernel.loops_here() else "baseline"
    chosen = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                            env={**os.environ, cpu_kernel.ISA_ENV: name, "OPENBLAS_CORETYPE": "Prescott"})
    assert chosen.stdout.split() == [name, cpu_kernel.OPENBLAS_CORES.get(name, "Prescott"), "Prescott"], chosen.stderr
    refused = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env={**os.environ, cpu_kernel.ISA_ENV: "sse9"},
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines() == [
        f"error: {cpu_kernel.ISA_ENV}='sse9' cannot run here: this CPU runs the kernel's "
        f"{', '.join(cpu_kernel.loops_here())} loops; name one of them, or leave {cpu_kernel.ISA_ENV} unset "
        "for the best"
    ]
    assert not (tmp_path / "run").exists()

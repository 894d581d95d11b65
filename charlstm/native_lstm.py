"""The LSTM time loop as a compiled CPU kernel (csrc/lstm_cpu.cc), called from jit through XLA's FFI.

`pip install` compiles the kernel (setup.py) against OpenBLAS from the scipy-openblas32 package;
here that library is loaded, the kernel's three handlers are registered with XLA once, and
`forward`/`backward` (training) and `inference` call them. The kernel runs OpenBLAS single-threaded
inside its own threads, one per core (OPENBLAS_NUM_THREADS sets how many), each taking a block of
the batch's rows. charlstm.fused_lstm uses them on one CPU device in float32
and falls back to its XLA scan elsewhere (GPU, TPU, several devices, bfloat16) or when the
kernel did not build or load (with a warning saying why).
"""

import ctypes
import functools
import importlib.util
import os
import warnings

import jax
import jax.numpy as jnp

FORWARD, BACKWARD, INFERENCE = "charlstm_lstm_forward", "charlstm_lstm_backward", "charlstm_lstm_inference"


@functools.cache
def available() -> bool:
    """Whether the compiled kernel loaded and its handlers are registered with XLA's CPU backend."""
    spec = importlib.util.find_spec("charlstm._lstm_cpu")
    if spec is None or spec.origin is None:
        return False
    try:
        import scipy_openblas32

        # The kernel leaves its sgemm symbol to be resolved from OpenBLAS loaded globally beforehand.
        openblas = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
        ctypes.CDLL(openblas, ctypes.RTLD_GLOBAL)
        library = ctypes.CDLL(spec.origin)
    except (ImportError, OSError) as error:
        warnings.warn(f"charlstm's compiled LSTM kernel did not load ({error}); using the slower XLA scan. "
                      "Reinstall with `pip install -e .` to rebuild it")
        return False
    jax.ffi.register_ffi_target(FORWARD, jax.ffi.pycapsule(library.CharlstmLstmForward), platform="cpu")
    jax.ffi.register_ffi_target(BACKWARD, jax.ffi.pycapsule(library.CharlstmLstmBackward), platform="cpu")
    jax.ffi.register_ffi_target(INFERENCE, jax.ffi.pycapsule(library.CharlstmLstmInference), platform="cpu")
    return True


def _float32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _ids(ids: jax.Array | None) -> jax.Array:
    """The kernels' ids argument: int32 character ids, or empty when x_proj is given whole."""
    return jnp.zeros((0,), jnp.int32) if ids is None else ids.astype(jnp.int32)


def _time_and_batch(x: jax.Array, ids: jax.Array | None) -> tuple[int, int]:
    return x.shape[:2] if ids is None else ids.shape


def forward(kernel: jax.Array, h0: jax.Array, c0: jax.Array, x: jax.Array, ids: jax.Array | None):
    """Training's forward pass: hs, cs `[time, batch, units]` and the tanh of every gate
    `[time, batch, 4*units]`, for the backward pass.

    `x` is time-major x_proj, or with `ids` `[time, batch]` a table `[vocab, 4*units]` whose rows the
    kernel reads by id itself (x_proj = x[ids])."""
    time, batch = _time_and_batch(x, ids)
    units = kernel.shape[0]
    results = (_float32(time, batch, units), _float32(time, batch, units), _float32(time, batch, 4 * units))
    return jax.ffi.ffi_call(FORWARD, results)(kernel, h0, c0, x, _ids(ids))


def inference(kernel: jax.Array, h0: jax.Array, c0: jax.Array, x: jax.Array, ids: jax.Array | None):
    """The forward pass without saving anything for a backward one: hs `[time, batch, units]` and the
    last c `[batch, units]`; `x` and `ids` as in forward."""
    time, batch = _time_and_batch(x, ids)
    results = (_float32(time, batch, kernel.shape[0]), _float32(*c0.shape))
    return jax.ffi.ffi_call(INFERENCE, results)(kernel, h0, c0, x, _ids(ids))


def backward(kernel, h0, c0, hs, cs, gates, d_hs, d_h, d_c, ids: jax.Array | None, vocab: int):
    """Gradients of x_proj (written over the gates' buffer), of the table `[vocab, 4*units]` when the
    forward gathered by `ids` (empty otherwise), of the kernel and of (h0, c0), from the forward's hs,
    cs and gates and the cotangents of hs and of the final (h, c)."""
    d_table = _float32(vocab if ids is not None else 0, kernel.shape[1])
    results = (_float32(*gates.shape), d_table, _float32(*kernel.shape), _float32(*h0.shape), _float32(*c0.shape))
    call = jax.ffi.ffi_call(BACKWARD, results, input_output_aliases={5: 0})
    return call(kernel, h0, c0, hs, cs, gates, d_hs, d_h, d_c, _ids(ids))

"""The LSTM time loop as a compiled CPU kernel (csrc/lstm_cpu.cc), called from jit through XLA's FFI.

`pip install` compiles the kernel (setup.py); here OpenBLAS from the scipy-openblas32 package is
loaded and handed to it, its three handlers are registered with XLA once, and `forward`/`backward`
(training) and `inference` call them. The kernel splits a batch's rows over up to one thread per
core (OPENBLAS_NUM_THREADS caps how many), each running its rows' whole time loop with
single-threaded OpenBLAS; small batches and one-step calls (sampling) stay on one thread.
charlstm.fused_lstm uses the kernel on one CPU device in float32 and falls back to its XLA scan
elsewhere (GPU, TPU, several devices, bfloat16) or when the kernel was not built (no compiler at
install time) or does not load (with a warning saying why).
"""

import ctypes
import functools
import importlib.util
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

FORWARD, BACKWARD, INFERENCE = "charlstm_lstm_forward", "charlstm_lstm_backward", "charlstm_lstm_inference"


def _openblas_path() -> str:
    """scipy-openblas32's library file, found without importing the package: its import loads the library
    into the process's global symbol scope, where other OpenBLAS users (SciPy's copy exports the same
    names) could bind to it and get the kernel's single-threaded setting."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the scipy-openblas32 package is not installed")
    libraries = sorted(Path(next(iter(spec.submodule_search_locations)), "lib").glob("libscipy_openblas*"))
    if not libraries:
        raise OSError("scipy-openblas32 has no libscipy_openblas library")
    return str(libraries[0])


@functools.cache
def available() -> bool:
    """Whether the compiled kernel loaded and its handlers are registered with XLA's CPU backend."""
    spec = importlib.util.find_spec("charlstm._lstm_cpu")
    if spec is None or spec.origin is None:
        return False
    try:
        openblas = ctypes.CDLL(_openblas_path())
        library = ctypes.CDLL(spec.origin)
        functions = ("scipy_cblas_sgemm", "scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads")
        library.CharlstmUseOpenblas(*(ctypes.cast(getattr(openblas, name), ctypes.c_void_p) for name in functions))
    except (ImportError, OSError, AttributeError) as error:
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

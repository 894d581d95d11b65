"""The LSTM time loop as a compiled CPU kernel (csrc/lstm_cpu.cc), called from jit through XLA's FFI.

`pip install` compiles the kernel (setup.py) against OpenBLAS from the scipy-openblas32 package;
here that library is loaded, the kernel's two handlers are registered with XLA once, and
`forward`/`backward` call them. charlstm.fused_lstm uses them on one CPU device in float32
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

FORWARD, BACKWARD = "charlstm_lstm_forward", "charlstm_lstm_backward"


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
    return True


def _float32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def forward(kernel: jax.Array, h0: jax.Array, c0: jax.Array, x_proj: jax.Array):
    """hs, cs `[time, batch, units]` and the tanh of every gate `[time, batch, 4*units]` (written over
    x_proj's buffer when XLA can give it up) for time-major `x_proj`."""
    time, batch, width = x_proj.shape
    units = kernel.shape[0]
    results = (_float32(time, batch, units), _float32(time, batch, units), _float32(time, batch, width))
    return jax.ffi.ffi_call(FORWARD, results, input_output_aliases={3: 2})(kernel, h0, c0, x_proj)


def backward(kernel, h0, c0, hs, cs, gates, d_hs, d_h, d_c):
    """Gradients of x_proj (written over the gates' buffer), of the kernel and of (h0, c0), from the
    forward's hs, cs and gates and the cotangents of hs and of the final (h, c)."""
    results = (_float32(*gates.shape), _float32(*kernel.shape), _float32(*h0.shape), _float32(*c0.shape))
    call = jax.ffi.ffi_call(BACKWARD, results, input_output_aliases={5: 0})
    return call(kernel, h0, c0, hs, cs, gates, d_hs, d_h, d_c)

"""The LSTM time loop as a compiled CPU kernel (csrc/lstm_cpu.cc), called from jit through XLA's FFI.

`pip install` compiles the kernel (setup.py); here OpenBLAS from the scipy-openblas32 package is
loaded and handed to it, and its four handlers (training's forward and backward, inference, sampling's
loop) are registered with XLA once. Each time step is one matmul (with the AVX-512 loops the kernel's
own, else OpenBLAS's) and one vectorised loop with no per-step dispatch; the kernel splits a batch's
rows into up to one block per core (OPENBLAS_NUM_THREADS caps how many), each running its rows' whole
time loop with single-threaded OpenBLAS on a thread of XLA's intra-op pool; small batches and one-step
calls stay on the calling thread. With character ids it
gathers the table's rows itself and sums their gradient by id, so x_proj and its gradient are never
written out whole. Its element-wise loops are compiled for AVX-512, AVX2 and baseline x86-64: it runs
the best this CPU has, or the copy CHARLSTM_CPU_ISA names (use_loops switches between calls), and its
OpenBLAS the kernels of the same instruction set. One CPU device, float32 only; the environment
variable CHARLSTM_CPU_KERNEL=off makes it unavailable, as on a machine where it did not build.
"""

import ctypes
import functools
import hashlib
import importlib.util
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from charlstm.errors import CharLSTMError
from charlstm.lstm.cell import Carry, projection_inputs, with_saved_gates

FORWARD, BACKWARD, INFERENCE = "charlstm_lstm_forward", "charlstm_lstm_backward", "charlstm_lstm_inference"
SAMPLE = "charlstm_lstm_sample"
DISABLE_ENV = "CHARLSTM_CPU_KERNEL"  # 'off': behave as if the kernel had not been built.
ISA_ENV = "CHARLSTM_CPU_ISA"  # 'avx512', 'avx2' or 'baseline': the loops' copy to run (unset: the best here).


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


# The OpenBLAS core (its kernels' instruction set) for the kernel's loops at load. OpenBLAS's own choice may be
# an older one: a CPU newer than its tables, or OPENBLAS_CORETYPE set for the process's other OpenBLAS users.
# On an AVX-512 CPU its AVX-512 kernels take the train step 0.7x the time of its AVX2 ones (docs/speed.md).
OPENBLAS_CORES = {"avx512": "SkylakeX", "avx2": "Haswell"}  # 'baseline': OpenBLAS's own choice.


def _load_openblas(core: str | None) -> ctypes.CDLL:
    """scipy-openblas32's library, loaded privately, its core `core` (None: OpenBLAS's own choice), which it
    reads from OPENBLAS_CORETYPE once, when loaded; the process's environment is restored after."""
    if core is None:
        return ctypes.CDLL(_openblas_path())
    saved = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = core
    try:
        return ctypes.CDLL(_openblas_path())
    finally:
        if saved is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = saved


@functools.cache
def load_failure() -> str | None:
    """Loads the kernel and registers its handlers with XLA's CPU backend, once; why it could not, or None."""
    if os.environ.get(DISABLE_ENV) == "off":
        return f"{DISABLE_ENV}=off is set"
    spec = importlib.util.find_spec("charlstm._lstm_cpu")
    if spec is None or spec.origin is None:
        return "it was not built (no C++ compiler at install time): reinstall with `pip install -e .` to build it"
    try:
        library = ctypes.CDLL(spec.origin)
        if name := os.environ.get(ISA_ENV):
            _switch_loops(library, name, f"{ISA_ENV}={name!r}")
        openblas = _load_openblas(OPENBLAS_CORES.get(_text(library, "CharlstmLoopsInUse")))
        functions = ("scipy_cblas_sgemm", "scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads")
        library.CharlstmUseOpenblas(*(ctypes.cast(getattr(openblas, name), ctypes.c_void_p) for name in functions))
    except (ImportError, OSError, AttributeError) as error:
        return f"it did not load ({error}): reinstall with `pip install -e .` to rebuild it"
    jax.ffi.register_ffi_target(FORWARD, jax.ffi.pycapsule(library.CharlstmLstmForward), platform="cpu")
    jax.ffi.register_ffi_target(BACKWARD, jax.ffi.pycapsule(library.CharlstmLstmBackward), platform="cpu")
    jax.ffi.register_ffi_target(INFERENCE, jax.ffi.pycapsule(library.CharlstmLstmInference), platform="cpu")
    jax.ffi.register_ffi_target(SAMPLE, jax.ffi.pycapsule(library.CharlstmLstmSample), platform="cpu")
    return None


def _switch_loops(library: ctypes.CDLL, name: str, asked: str) -> None:
    """Makes the kernel run the loops compiled for `name`; one clear error (naming what runs) if it cannot."""
    if library.CharlstmUseLoops(name.encode()) != 0:
        here = _text(library, "CharlstmLoopsHere")
        raise CharLSTMError(f"{asked} cannot run here: this CPU runs the kernel's {here.replace(',', ', ')} loops; "
                            f"name one of them, or leave {ISA_ENV} unset for the best")


def _text(library: ctypes.CDLL, function: str) -> str:
    """What one of the library's functions that return a C string returns."""
    getattr(library, function).restype = ctypes.c_char_p
    return getattr(library, function)().decode()


def _library() -> ctypes.CDLL:
    """The loaded kernel (dlopen hands back the same library)."""
    if failure := load_failure():
        raise CharLSTMError(f"the CPU kernel cannot run here: {failure}")
    return ctypes.CDLL(importlib.util.find_spec("charlstm._lstm_cpu").origin)


def loops_here() -> list[str]:
    """The copies of the kernel's element-wise loops this CPU runs, best first: 'avx512', 'avx2', 'baseline'."""
    return _text(_library(), "CharlstmLoopsHere").split(",")


def loops_in_use() -> str:
    """The copy of the loops the kernel runs now."""
    return _text(_library(), "CharlstmLoopsInUse")


def use_loops(name: str) -> None:
    """Runs the kernel's loops compiled for `name` (one of loops_here()) from the next call on; compiled
    functions need no retracing. For tests and benchmarks of every copy; CHARLSTM_CPU_ISA sets it at load."""
    _switch_loops(_library(), name, f"loops {name!r}")


def read_bytes_per_second(n_bytes: int, passes: int = 2000, repeats: int = 5) -> float:
    """How fast the kernel's loops read `n_bytes` (rounded up to 256) again and again, `passes` times, the
    fastest of `repeats`: the memory-bound limit of a step that reads that many bytes of weights once (from
    cache, where they fit)."""
    read = _library().CharlstmReadFloats
    read.restype, read.argtypes = ctypes.c_double, (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
    floats = np.ones(-(-n_bytes // 256) * 64, np.float32)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        total = read(floats.ctypes.data, floats.size, passes)
        seconds.append(time.perf_counter() - start)
        if total != floats.size * passes:  # Sums of ones: exact while a pass's sum fits float32's 24 bits.
            raise RuntimeError(f"the kernel's read of {floats.size} ones {passes} times summed to {total}")
    return passes * floats.nbytes / min(seconds)


def build_info() -> dict:
    """The kernel's build as run_info.jsonl records it: its file's SHA-256 and, once loaded, the compiler and
    flags baked in at build time, OpenBLAS's configuration and core, and the threads a batch is split over."""
    spec = importlib.util.find_spec("charlstm._lstm_cpu")
    if spec is None or spec.origin is None:
        return {"built": False}
    info = {"built": True, "sha256": hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()}
    if failure := load_failure():
        return {**info, "loaded": False, "why": failure}
    library, openblas = ctypes.CDLL(spec.origin), ctypes.CDLL(_openblas_path())  # Already loaded: the same handles.
    texts = {
        "compiler": (library, "CharlstmCompiler"), "flags": (library, "CharlstmBuildFlags"),
        "openblas": (openblas, "scipy_openblas_get_config"), "openblas_core": (openblas, "scipy_openblas_get_corename"),
    }
    for key, (owner, name) in texts.items():
        if hasattr(owner, name):  # A kernel built before these existed lacks them.
            info[key] = _text(owner, name)
    threads = library.CharlstmThreads() if hasattr(library, "CharlstmThreads") else None
    return {**info, "loaded": True, "loops": _text(library, "CharlstmLoopsInUse"), "threads": threads}


def available() -> bool:
    """Whether the compiled kernel loaded (it may still not serve: see `unavailable`)."""
    return load_failure() is None


def unavailable(dtype) -> str | None:
    """Why the kernel cannot run an LSTM layer here on arrays of `dtype`, or None when it can."""
    if jax.default_backend() != "cpu":
        return f"it runs on a CPU only (the default backend is {jax.default_backend()})"
    if jax.device_count() != 1:
        return f"XLA cannot split its work over devices, and there are {jax.device_count()}"
    if dtype != jnp.float32:
        return f"it computes in float32 only, not {dtype}"
    return load_failure()


def _float32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _ids(ids: jax.Array | None) -> jax.Array:
    """The kernels' ids argument: int32 character ids, or empty when x_proj is given whole."""
    return jnp.zeros((0,), jnp.int32) if ids is None else ids.astype(jnp.int32)


def _time_and_batch(x: jax.Array, ids: jax.Array | None) -> tuple[int, int]:
    return x.shape[:2] if ids is None else ids.shape


def _call(target: str, results, **options):
    """The handler as a function of jax arrays; under jax.vmap it runs once per batch element."""
    return jax.ffi.ffi_call(target, results, vmap_method="sequential", **options)


def _saving_forward(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    """Training's forward pass: hs, cs `[time, batch, units]` and the tanh of every gate."""
    time, batch = _time_and_batch(x, ids)
    units = kernel.shape[0]
    results = (_float32(time, batch, units), _float32(time, batch, units), _float32(time, batch, 4 * units))
    return _call(FORWARD, results)(kernel, *carry, x, _ids(ids))


def _inference(kernel: jax.Array, carry: Carry, x: jax.Array, ids: jax.Array | None):
    """The final carry and hs `[time, batch, units]`, saving nothing for a backward pass."""
    time, batch = _time_and_batch(x, ids)
    results = (_float32(time, batch, kernel.shape[0]), _float32(*carry[1].shape))
    hs, c = _call(INFERENCE, results)(kernel, *carry, x, _ids(ids))
    return (hs[-1], c), hs


def _backward(kernel, carry, hs, cs, gates, d_hs, d_h, d_c, ids, vocab: int):
    """dx (x_proj's gradient, written over the gates' buffer, or with ids the table's), d_kernel, dh0, dc0."""
    d_table = _float32(vocab if ids is not None else 0, kernel.shape[1])
    results = (_float32(*gates.shape), d_table, _float32(*kernel.shape), _float32(*d_h.shape), _float32(*d_c.shape))
    call = _call(BACKWARD, results, input_output_aliases={5: 0})
    dz, d_table, *grads = call(kernel, *carry, hs, cs, gates, d_hs, d_h, d_c, _ids(ids))
    return dz if ids is None else d_table, *grads


scan = with_saved_gates(_saving_forward, _inference, _backward)


def lstm_scan(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array, carry: Carry, x: jax.Array):
    """charlstm.lstm's signature: ids `[time, batch]` or features `[time, batch, in]` -> (hs, (h, c))."""
    return scan(recurrent_kernel, carry, *projection_inputs(input_kernel, bias, x))


def sample_steps(
    table: jax.Array, recurrent: jax.Array, inputs: jax.Array, biases: jax.Array, head_kernel: jax.Array,
    head_bias: jax.Array, state: jax.Array, logits: jax.Array, uniforms: jax.Array, temperatures: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """charlstm.sampling's loop, one character per uniform number of each row, in one call: the LSTM layers'
    weights (table `[vocab, 4*units]`, bias included; recurrent `[layers, units, 4*units]`; the layers above
    the first: inputs `[layers - 1, units, 4*units]`, biases `[layers - 1, 4*units]`), the head's
    `[units, vocab]` and `[vocab]`, the state `[layers, 2, rows, units]` (h and c), the logits `[rows, vocab]`,
    uniforms `[rows, steps]` and temperatures `[rows]` -> the drawn ids, their log-probabilities under the
    model and under the distribution drawn from `[rows, steps]`, and the state and logits after the last step."""
    rows, steps = uniforms.shape
    results = (jax.ShapeDtypeStruct((rows, steps), jnp.int32), _float32(rows, steps), _float32(rows, steps),
               _float32(*state.shape), _float32(*logits.shape))
    return _call(SAMPLE, results)(
        table, recurrent, inputs, biases, head_kernel, head_bias, state, logits, uniforms, temperatures
    )

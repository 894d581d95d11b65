"""Builds charlstm's CPU LSTM kernel (csrc/lstm_cpu.cc) against XLA's FFI headers and OpenBLAS's CBLAS header.

Everything else is in pyproject.toml. The kernel is optional: where it cannot be compiled, or its build
headers (jax's FFI, scipy-openblas32) are missing, the package still installs and the LSTM runs as plain
XLA (charlstm.lstm.cpu_kernel.load_failure() says why).
"""

import json
import os
import sysconfig
import warnings

from setuptools import Extension, setup

COMPILE_ARGS = ["-std=c++17", "-O3"]


def build_flags() -> str:
    """The compile flags as setuptools passes them, as far as they can be known here."""
    parts = [sysconfig.get_config_var("CFLAGS"), os.environ.get("CFLAGS"), *COMPILE_ARGS]
    return " ".join(" ".join(part.split()) for part in parts if part)


def kernel_extensions() -> list[Extension]:
    try:
        import jax.ffi
        import scipy_openblas32
    except ImportError as error:
        warnings.warn(f"not building charlstm's CPU LSTM kernel ({error}): the LSTM will run as XLA", stacklevel=1)
        return []
    return [
        Extension(
            "charlstm._lstm_cpu",
            ["csrc/lstm_cpu.cc"],
            depends=["csrc/lstm_loops.inc"],
            include_dirs=[jax.ffi.include_dir(), scipy_openblas32.get_include_dir()],
            # No -march: the kernel picks its loops' instruction set when loaded (VECTOR_CLONES), so a build
            # runs on any CPU of the architecture. OpenBLAS is not linked here: charlstm.lstm.cpu_kernel
            # loads scipy_openblas32's copy (which picks its own) and hands it over.
            extra_compile_args=COMPILE_ARGS,
            # Baked into the kernel for run_info.jsonl: Python's compile flags, the environment's, then ours.
            define_macros=[("CHARLSTM_BUILD_FLAGS", json.dumps(build_flags()))],
            language="c++",
            optional=True,
        )
    ]


setup(ext_modules=kernel_extensions())

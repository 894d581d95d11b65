"""What decides a run's last digits besides its config and packages, as run_info.jsonl records it.

The CPU and its vector extensions (XLA compiles for the host's, the CPU kernel picks its loops' among
them), the thread counts (float32 sums are split, and so added in another order, by thread), the CPU
kernel's build, the environment variables that change what runs, and the project's commit. Another
machine gives other last digits; scripts/reproduce.py lists which of these differed.
"""

import os
import platform
import subprocess
from pathlib import Path

from charlstm.lstm import cpu_kernel

# Vector extensions worth knowing, as /proc/cpuinfo names them: x86's, then Arm's.
VECTOR_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm",
)
# Environment variables that change which code runs or how many threads it takes.
VARIABLES = (
    "CHARLSTM_CPU_KERNEL", "CHARLSTM_CPU_ISA", "CHARLSTM_MALLOC", "JAX_PLATFORMS", "XLA_FLAGS", "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)
GIT_TIMEOUT_SECONDS = 5  # A checkout on a slow or hung filesystem must not hold training up.
PROJECT = Path(__file__).resolve().parents[1]  # The checkout's root when the package runs from one.


def parse_cpuinfo(text: str) -> dict:
    """The CPU model and the VECTOR_FEATURES it has, from the text of Linux's /proc/cpuinfo (its first CPU)."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"model": model, "features": [f for f in VECTOR_FEATURES if f in flags]}


def cpu() -> dict:
    """The CPU model and vector extensions; off Linux, the model as Python knows it and features None."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {"model": platform.processor() or platform.machine(), "features": None}


def threads(kernel_threads: int | None) -> dict:
    """Thread counts: the machine's CPUs, those this process may run on (XLA's intra-op pool takes that
    many unless XLA_FLAGS says otherwise), and the CPU kernel's `kernel_threads` (None: not loaded)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpus": os.cpu_count(), "affinity": affinity, "cpu_kernel": kernel_threads}


def variables() -> dict:
    """The VARIABLES' values, None when unset."""
    return {name: os.environ.get(name) for name in VARIABLES}


def git_commit(folder: Path) -> dict | None:
    """The commit checked out at `folder` and whether tracked files differ from it (`dirty`); None when
    `folder` is not the root of a git checkout, git is missing, or it does not answer in time."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(folder).resolve():
            return None  # An installed package inside some other repository is not its checkout.
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def record() -> dict:
    """Everything above as run_info.jsonl's fields; `git` only when the package runs from a checkout."""
    kernel = cpu_kernel.build_info()
    kernel_threads = kernel.pop("threads", None)
    info = {"cpu": cpu(), "threads": threads(kernel_threads), "cpu_kernel": kernel, "variables": variables()}
    if (commit := git_commit(PROJECT)) is not None:
        info["git"] = commit
    return info

"""Data parallelism over every device of every process: one mesh axis, 'data'.

Batches of window starts are split over the 'data' axis; parameters,
optimizer state and the corpus ids are replicated, so each device gathers its
own windows and jit's partitioner adds the gradient all-reduce. Each process
transfers only its own devices' part of a global array, so the same code runs
on one device, on several, and on several hosts started with jax.distributed.
"""

import contextlib
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from charlstm.errors import CharLSTMError

DATA_AXIS = "data"
# What starts a multi-process run; JAX_COORDINATOR_ADDRESS alone also turns it on.
COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise CharLSTMError(f"environment variable {name}={value!r} must be a non-negative integer")
    return int(value)


def initialize_distributed(requested: bool) -> None:
    """Starts jax.distributed when `requested` (--distributed) or JAX_COORDINATOR_ADDRESS is set.

    Coordinator address, process count and process id come from
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID where set;
    JAX detects the rest on Cloud TPU, Slurm and Open MPI. Call before any JAX work.
    """
    if not (requested or os.environ.get(COORDINATOR_ENV)):
        return
    try:
        jax.distributed.initialize(
            coordinator_address=os.environ.get(COORDINATOR_ENV),
            num_processes=_env_int(NUM_PROCESSES_ENV),
            process_id=_env_int(PROCESS_ID_ENV),
        )
    except ValueError as e:
        raise CharLSTMError(
            f"could not start jax.distributed ({e}): set {COORDINATOR_ENV}=HOST:PORT, {NUM_PROCESSES_ENV} "
            f"and {PROCESS_ID_ENV} in every process, or launch on Cloud TPU, Slurm or Open MPI"
        ) from None


def is_primary() -> bool:
    """Whether this is process 0, the one that writes the run folder and prints."""
    return jax.process_index() == 0


def make_mesh() -> Mesh:
    """Every device of every process on the 'data' axis, ordered for fast all-reduces (TPU)."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over 'data'."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(field: str, batch_size: int, mesh: Mesh) -> None:
    """Refuses a global batch that does not split evenly over the mesh's devices."""
    if batch_size % mesh.size:
        multiple = -(-batch_size // mesh.size) * mesh.size
        raise CharLSTMError(
            f"{field}={batch_size} does not split evenly over {mesh.size} devices: "
            f"use a multiple of {mesh.size}, e.g. {multiple}"
        )


def put(tree, sharding: NamedSharding):
    """The arrays of `tree` as global arrays with `sharding`; other leaves (ints, floats, None) as they are.

    Every process must hold the same values; each transfers only the parts
    its own devices hold. An array already with `sharding` is returned as is.
    """

    def one(x):
        if not isinstance(x, (jax.Array, np.ndarray)) or getattr(x, "sharding", None) == sharding:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def to_host(x: jax.Array) -> np.ndarray:
    """All of a global array as numpy on every process, gathering other processes' parts if needed."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return multihost_utils.process_allgather(x, tiled=True)


def sync(name: str) -> None:
    """Waits until every process reaches the barrier `name`; nothing to wait for in one process."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process_signal(signal_number: int | None) -> int | None:
    """The largest signal number any process received (None: none did); every process must call it."""
    if jax.process_count() == 1:
        return signal_number
    received = int(np.max(multihost_utils.process_allgather(np.int32(signal_number or 0))))
    return received or None


@contextlib.contextmanager
def quiet_unless_primary():
    """Silences stdout on processes other than 0, so a multi-process run prints one log."""
    if is_primary():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield

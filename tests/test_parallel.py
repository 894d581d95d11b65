"""Data parallelism: 4 CPU devices match 1, shardings are train_step.shardings(), 2 processes write one run."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from charlstm import CharLSTMError, parallel
from charlstm import config as config_lib
from charlstm.train import train_and_evaluate
from tests.conftest import REPO, float32_tolerance

# Runs in a fresh process with 4 CPU devices: trains the tiny config, checks where the arrays
# of every step live, prints the metrics as JSON.
FOUR_DEVICES = """
import json, sys
import jax
from jax.sharding import PartitionSpec
from charlstm import CharLSTMError, config as config_lib, train, train_step

config = config_lib.from_file(sys.argv[1])
config.data.dir, workdir = sys.argv[2], sys.argv[3]
assert jax.device_count() == 4
shardings = train_step.shardings()
assert shardings["batch"].spec == PartitionSpec("data") and shardings["replicated"].spec == PartitionSpec()
assert shardings["batch"].mesh.size == 4

make_step, checked = train_step.make_train_step, []
def checked_make_step(*args):
    step = make_step(*args)
    def checked_step(state, ids, starts):
        out, loss = step(state, ids, starts)
        assert starts.sharding == shardings["batch"], starts.sharding
        assert [len(s.data) for s in starts.addressable_shards] == [len(starts) // 4] * 4
        for tree in (state.params, state.opt_state, ids, out.params, out.opt_state):
            for leaf in jax.tree.leaves(tree):
                assert leaf.sharding.is_equivalent_to(shardings["replicated"], leaf.ndim), leaf.sharding
        checked.append(1)
        return out, loss
    return checked_step
train_step.make_train_step = checked_make_step
metrics = train.train_and_evaluate(config, workdir)
assert checked

config.train.batch_size = 6
try:
    train.train_and_evaluate(config, workdir + "-odd")
    raise AssertionError("a batch of 6 was accepted on 4 devices")
except CharLSTMError as e:
    assert "does not split evenly over 4 devices" in str(e), e
print(json.dumps(metrics))
"""


def assert_close_per_epoch(got: list[dict], one_device: dict[str, list[dict]]) -> None:
    """`got`'s losses equal one device's, epoch by epoch, to float32's own spread: 4x the gap between
    two one-device runs of the same training that sum in other orders (other LSTM implementations)."""
    expected, reordered = one_device["auto"][: len(got)], one_device["autodiff"][: len(got)]
    assert [m["step"] for m in got] == [m["step"] for m in expected]
    for field in ("train_loss", "val_loss"):
        want, other = (np.array([m[field] for m in records]) for records in (expected, reordered))
        tolerance = float32_tolerance(other, want)
        for epoch, (a, b) in enumerate(zip([m[field] for m in got], want), 1):
            assert abs(a - b) <= tolerance, f"epoch {epoch} {field}: {a!r}, one device {b!r}, tolerance {tolerance:.3g}"


# The tests below train on forced CPU devices in subprocesses and compare with one_device, trained here.
on_cpu_only = pytest.mark.skipif(
    jax.default_backend() != "cpu",
    reason=f"compares forced CPU devices (XLA_FLAGS) with a run on this process's {jax.default_backend()} device, "
    "whose LSTM implementation and rounding differ; several processes would also share one accelerator",
)


def cpu_devices_env(count: int, **extra: str) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}", **extra}


@pytest.fixture(scope="module")
def one_device(data_dir, tmp_path_factory) -> dict[str, list[dict]]:
    """The tiny config's metrics trained here, on this process's one CPU device, with the LSTM
    implementation 'auto' picks and with autodiff's (the same training, summed in another order)."""
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    runs = {}
    for name in ("auto", "autodiff"):
        config.model.lstm_impl = name
        runs[name] = train_and_evaluate(config, tmp_path_factory.mktemp(f"one_device_{name}"))
    return runs


@pytest.mark.slow
@on_cpu_only
def test_four_devices_match_one_and_shard_the_batch(one_device, data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES, str(REPO / "configs" / "tiny.py"), str(data_dir), str(tmp_path / "four")],
        capture_output=True, text=True, cwd=REPO, env=cpu_devices_env(4), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    four_devices = json.loads(result.stdout.strip().splitlines()[-1])
    assert_close_per_epoch(four_devices, one_device)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@on_cpu_only
def test_two_processes_train_one_run(one_device, data_dir, tmp_path):
    workdir, port = tmp_path / "two", free_port()
    command = [
        sys.executable, str(REPO / "scripts" / "train.py"), "--config", "configs/tiny.py", "--distributed",
        f"--config.data.dir={data_dir}", "--workdir", str(workdir), "--config.train.epochs=1",
    ]
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=cpu_devices_env(
                1, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)
            ),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "epoch 1:" in outputs[0][0] and "epoch" not in outputs[1][0]  # One log, from process 0.
    (info,) = [json.loads(line) for line in (workdir / "run_info.jsonl").read_text().splitlines()]
    assert info["processes"] == 2 and len(info["devices"]) == 2
    assert (workdir / "samples.txt").read_text().count("=== epoch") == 1
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert_close_per_epoch(metrics, one_device)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [str(metrics[-1]["step"])]


def test_put_places_arrays_and_leaves_other_values():
    sharding = parallel.replicated(parallel.make_mesh())
    tree = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "n": 3, "none": None}
    placed = parallel.put(tree, sharding)
    assert placed["a"].sharding == sharding and placed["n"] == 3 and placed["none"] is None
    np.testing.assert_array_equal(parallel.to_host(placed["a"]), tree["a"])
    assert parallel.put(placed, sharding)["a"] is placed["a"]


def test_distributed_needs_its_settings(monkeypatch):
    monkeypatch.delenv(parallel.COORDINATOR_ENV, raising=False)
    parallel.initialize_distributed(False)  # Not asked, no coordinator: nothing to start.
    monkeypatch.setenv(parallel.NUM_PROCESSES_ENV, "two")
    with pytest.raises(CharLSTMError, match="JAX_NUM_PROCESSES='two'"):
        parallel.initialize_distributed(True)

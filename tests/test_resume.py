"""Reproducibility and fault tolerance of training: same numbers, exact resume, clean stops."""

import json
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from charlstm import train
from charlstm.checkpoints import Checkpoints
from charlstm.errors import TrainingDiverged
from tests.conftest import REPO, run_script, without_timing


def numbers(workdir) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return without_timing([json.loads(line) for line in lines])


def final_params(workdir):
    checkpoints = Checkpoints(workdir, read_only=True)
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    return checkpoints.manager.restore(checkpoints.latest_step(), args=args)["state"]["params"]


def assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Long enough epochs (~250 steps) that a signal lands mid-run.
SLOW = ("--config.train.batch_size=4", "--config.train.epochs=3", "--config.train.log_every_steps=1")


def train_args(workdir, data_dir, *extra):
    return [
        sys.executable, str(REPO / "scripts" / "train.py"), "--config", "configs/tiny.py",
        "--workdir", str(workdir), f"--config.data.dir={data_dir}", *SLOW, *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return workdir


def start_and_signal(workdir, data_dir, signum, after_checkpoints: int) -> subprocess.CompletedProcess:
    """Starts training and sends `signum` once `after_checkpoints` checkpoints exist."""
    process = subprocess.Popen(train_args(workdir, data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        steps = list((workdir / "checkpoints").glob("*/commit_success.txt")) if (workdir / "checkpoints").exists() else []
        if len(steps) >= after_checkpoints:
            process.send_signal(signum)
            break
        time.sleep(0.02)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_two_runs_give_identical_numbers(uninterrupted, tmp_path, data_dir):
    result = subprocess.run(train_args(tmp_path / "again", data_dir), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert numbers(tmp_path / "again") == numbers(uninterrupted)
    assert_bitwise_equal(final_params(tmp_path / "again"), final_params(uninterrupted))


def test_sigkill_then_resume_ends_bitwise_equal(uninterrupted, tmp_path, data_dir):
    workdir = tmp_path / "killed"
    killed = start_and_signal(workdir, data_dir, signal.SIGKILL, after_checkpoints=1)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))
    assert numbers(workdir) == numbers(uninterrupted)


def test_sigint_saves_mid_epoch_and_resumes_exactly(uninterrupted, tmp_path, data_dir):
    workdir = tmp_path / "interrupted"
    stopped = start_and_signal(workdir, data_dir, signal.SIGINT, after_checkpoints=1)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr
    assert "re-run the same command to resume" in stopped.stderr and "Traceback" not in stopped.stderr
    resumed = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))
    assert numbers(workdir) == numbers(uninterrupted)


KILL_IN_SECOND_CHECKPOINT_WRITE = """
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity
finalize, calls = atomicity.AtomicRenameTemporaryPath.finalize, []
async def dying_finalize(self, *args, **kwargs):
    if self.get().parent.name == "checkpoints":  # A whole step, not one of its items.
        calls.append(1)
    if len(calls) == 2:  # Everything of the second checkpoint is written, nothing committed.
        os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = dying_finalize
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_usable(uninterrupted, tmp_path, data_dir):
    workdir = tmp_path / "torn"
    args = train_args(workdir, data_dir)
    killed = subprocess.run([sys.executable, "-c", KILL_IN_SECOND_CHECKPOINT_WRITE, *args[1:]], capture_output=True, text=True, cwd=REPO)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = Checkpoints(workdir, read_only=True)
    assert len(checkpoints.manager.all_steps()) == 1  # The torn write is not a checkpoint.
    first = checkpoints.latest_step()
    resumed = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {first}" in resumed.stdout
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))


def nan_loss(loss, carry):
    return loss * jnp.nan, carry


def test_a_non_finite_loss_stops_and_keeps_the_best_checkpoint(tiny_config, tmp_path, monkeypatch):
    tiny_config.train.epochs = 1
    train.train_and_evaluate(tiny_config, tmp_path)
    best = Checkpoints(tmp_path, read_only=True).best_step()
    before = final_params(tmp_path)
    real_loss = train.loss_fn
    monkeypatch.setattr(train, "loss_fn", lambda *args: nan_loss(*real_loss(*args)))
    tiny_config.train.epochs = 2
    with pytest.raises(TrainingDiverged, match=f"best checkpoint \\(step {best}\\) is untouched"):
        train.train_and_evaluate(tiny_config, tmp_path)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    assert checkpoints.best_step() == checkpoints.latest_step() == best
    assert_bitwise_equal(final_params(tmp_path), before)


def test_a_diverging_run_exits_with_code_1(tmp_path, data_dir):
    result = run_script(
        "train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
        f"--config.data.dir={data_dir}", "--config.train.learning_rate=1e38",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "learning_rate" in lines[0]

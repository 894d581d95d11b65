"""Reproducibility and fault tolerance of training: same numbers, exact resume, clean stops."""

import json
import re
import signal
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from charlstm import train, train_step
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


EPOCHS = ("--config.train.epochs=3",)


def train_args(workdir, data_dir, *extra):
    return [
        sys.executable, str(REPO / "scripts" / "train.py"), "--config", "configs/tiny.py",
        "--workdir", str(workdir), f"--config.data.dir={data_dir}", *EPOCHS, *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return workdir


def steps_per_epoch(workdir) -> int:
    return numbers(workdir)[0]["step"]


# Runs scripts/train.py (argv[2:]) with stopping.should_stop wrapped: at step int(argv[1]) it prints
# "at step N" and holds training there until a signal arrives (60 s at most), so the test's signal
# lands at that step boundary however slow the machine.
SIGNAL_AT_STEP = """
import runpy, sys, time
from charlstm import stopping
should_stop, target, boundaries = stopping.should_stop, int(sys.argv[1]), []
def announcing_should_stop(stop, epoch_step, every):
    if len(boundaries) == target:
        print(f"at step {target}", flush=True)
        deadline = time.monotonic() + 60
        while stop.signal is None and time.monotonic() < deadline:
            time.sleep(0.001)
    boundaries.append(epoch_step)
    return should_stop(stop, epoch_step, every)
stopping.should_stop = announcing_should_stop
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# Longest a signal test waits for the run to announce its step and then to end.
WAIT_SECONDS = 300


def signal_at_step(workdir, data_dir, signum, step: int) -> subprocess.CompletedProcess:
    """Trains until the run announces `step` on its stdout, sends it `signum` and waits for it to end;
    kills it after WAIT_SECONDS, so the test cannot hang."""
    command = [sys.executable, "-c", SIGNAL_AT_STEP, str(step), *train_args(workdir, data_dir)[1:]]
    with open(workdir.parent / f"{workdir.name}.stderr", "w+") as stderr:  # A file: a full pipe would block it.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO)
        watchdog = threading.Timer(WAIT_SECONDS, process.kill)
        watchdog.start()
        try:
            out = []
            for line in process.stdout:
                out.append(line)
                if line.strip() == f"at step {step}":
                    process.send_signal(signum)
                    break
            out.append(process.stdout.read())
            process.wait()
        finally:
            watchdog.cancel()
        stderr.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, "".join(out), stderr.read())


@pytest.mark.slow
def test_two_runs_give_identical_numbers(uninterrupted, tmp_path, data_dir):
    result = subprocess.run(train_args(tmp_path / "again", data_dir), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert numbers(tmp_path / "again") == numbers(uninterrupted)
    assert_bitwise_equal(final_params(tmp_path / "again"), final_params(uninterrupted))


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal(uninterrupted, tmp_path, data_dir):
    workdir, steps = tmp_path / "killed", steps_per_epoch(uninterrupted)
    killed = signal_at_step(workdir, data_dir, signal.SIGKILL, 2 * steps + steps // 2)
    assert killed.returncode == -signal.SIGKILL
    # Epoch 2's checkpoint may still be in flight (saves are written in the background), epoch 1's is not:
    # a save starts only after the one before it is complete.
    latest = Checkpoints(workdir, read_only=True).latest_step()
    assert latest in (steps, 2 * steps)
    resumed = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {workdir} at epoch {latest // steps + 1}, step {latest}" in resumed.stdout
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))
    assert numbers(workdir) == numbers(uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_mid_epoch_and_resumes_exactly(uninterrupted, tmp_path, data_dir, signum, exit_code):
    workdir, steps = tmp_path / "interrupted", steps_per_epoch(uninterrupted)
    stopped = signal_at_step(workdir, data_dir, signum, steps + steps // 2)
    assert stopped.returncode == exit_code, stopped.stderr
    assert "re-run the same command to resume" in stopped.stderr and "Traceback" not in stopped.stderr
    saved = re.search(r"saved step (\d+) \(epoch (\d+), (\d+)/(\d+) steps\)", stopped.stderr)
    assert saved, stopped.stderr
    step, epoch, epoch_step, epoch_steps = map(int, saved.groups())
    # Saved where the signal arrived, mid-epoch 2: not at the last epoch boundary (step `steps`).
    assert (step, epoch, epoch_step, epoch_steps) == (steps + steps // 2, 2, steps // 2, steps)
    assert Checkpoints(workdir, read_only=True).latest_step() == step
    resumed = subprocess.run(train_args(workdir, data_dir), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {workdir} at epoch 2, step {step}" in resumed.stdout
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))
    assert numbers(workdir) == numbers(uninterrupted)


KILL_IN_SECOND_CHECKPOINT_WRITE = """
import os, runpy, signal, sys
rename, calls = os.rename, []
def dying_rename(source, target, *args, **kwargs):
    whole_step = os.path.basename(os.path.dirname(os.fspath(target))) == "checkpoints"  # Not one of its items.
    if "orbax-checkpoint-tmp" in os.fspath(source) and whole_step:
        calls.append(1)
        if len(calls) == 2:  # Everything of the second checkpoint is written, nothing committed.
            os.kill(os.getpid(), signal.SIGKILL)
    return rename(source, target, *args, **kwargs)
os.rename = dying_rename
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_usable(uninterrupted, tmp_path, data_dir):
    """What holds however the background save and the next epoch interleave: the torn write is no
    checkpoint, the one before it loads, and the resumed run ends as the uninterrupted one."""
    workdir = tmp_path / "torn"
    args = train_args(workdir, data_dir)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SECOND_CHECKPOINT_WRITE, *args[1:]], capture_output=True, text=True, cwd=REPO
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = Checkpoints(workdir, read_only=True)
    first = steps_per_epoch(uninterrupted)
    assert checkpoints.manager.all_steps() == [first], "the torn second write must not count as a checkpoint"
    loaded, trained = final_params(workdir), final_params(uninterrupted)  # The checkpoint left loads whole.
    assert jax.tree.structure(loaded) == jax.tree.structure(trained)
    assert all(np.isfinite(x).all() and x.shape == y.shape for x, y in zip(*map(jax.tree.leaves, (loaded, trained))))
    resumed = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {workdir} at epoch 2, step {first}" in resumed.stdout
    assert_bitwise_equal(final_params(workdir), final_params(uninterrupted))
    assert numbers(workdir) == numbers(uninterrupted)  # Lines written after the last checkpoint were redone.


def nan_loss(total, aux):
    """loss_fn's outputs, the objective and the cross-entropy made NaN."""
    loss, carry = aux
    return total * jnp.nan, (loss * jnp.nan, carry)


def test_a_non_finite_loss_stops_and_keeps_the_best_checkpoint(tiny_config, tmp_path, monkeypatch):
    tiny_config.train.epochs = 1
    train.train_and_evaluate(tiny_config, tmp_path)
    best = Checkpoints(tmp_path, read_only=True).best_step()
    before = final_params(tmp_path)
    real_loss = train_step.loss_fn
    monkeypatch.setattr(train_step, "loss_fn", lambda *args: nan_loss(*real_loss(*args)))
    tiny_config.train.epochs = 2
    with pytest.raises(TrainingDiverged, match=f"best checkpoint \\(step {best}\\) is untouched"):
        train.train_and_evaluate(tiny_config, tmp_path)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    assert checkpoints.best_step() == checkpoints.latest_step() == best
    assert_bitwise_equal(final_params(tmp_path), before)


@pytest.mark.slow
def test_a_diverging_run_exits_with_code_1(tmp_path, data_dir):
    result = run_script(
        "train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
        f"--config.data.dir={data_dir}", "--config.train.learning_rate=1e38",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "learning_rate" in lines[0]

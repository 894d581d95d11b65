import errno
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from charlstm import CharLSTMError, trained_run
from charlstm.checkpoints import CheckpointMeta, Checkpoints
from charlstm.errors import SaveFailed
from charlstm.train import train_and_evaluate


def test_best_and_latest_are_both_kept(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    state = {"params": {"w": jnp.arange(3.0)}, "step": 0}
    for step, val_loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5)]:
        meta = CheckpointMeta("ab", {}, {"epoch": step // 10, "val_loss": val_loss})
        checkpoints.save(step, {**state, "step": step}, meta)
    checkpoints.wait()  # Saves are written in the background.
    assert checkpoints.manager.all_steps() == [20, 30, 40]  # The best and the two latest.
    assert (checkpoints.best_step(), checkpoints.latest_step()) == (20, 40)
    restored, meta = Checkpoints(tmp_path, read_only=True).restore(20, like=state)
    np.testing.assert_array_equal(restored["params"]["w"], [0.0, 1.0, 2.0])
    assert restored["step"] == 20 and meta == CheckpointMeta("ab", {}, {"epoch": 2, "val_loss": 1.0})


def test_reading_a_folder_without_checkpoints_is_a_user_error(tmp_path):
    with pytest.raises(CharLSTMError, match="no checkpoints"):
        Checkpoints(tmp_path, read_only=True)


def test_params_restore_alone_with_their_own_structure(tmp_path):
    params = {"layers": {0: {"w": jnp.arange(3.0)}}, "head": {"b": jnp.ones(2)}}
    state = {"params": params, "opt_state": {"mu": jnp.zeros(5)}, "step": 7}
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(7, state, CheckpointMeta("ab", {}, {"val_loss": 1.0}))
    checkpoints.wait()
    restored = Checkpoints(tmp_path, read_only=True).restore_params(7, like=params)
    assert restored.keys() == params.keys() and list(restored["layers"]) == [0]  # An int key stays an int.
    np.testing.assert_array_equal(restored["layers"][0]["w"], [0.0, 1.0, 2.0])


def test_a_full_disk_stops_training_with_one_message_and_keeps_the_complete_checkpoints(
    tiny_config, tmp_path, monkeypatch
):
    saved, original_save = [], ocp.CheckpointManager.save

    def save_until_the_disk_is_full(self, step, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(step)
        return original_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_the_disk_is_full)
    tiny_config.train.epochs = 3
    workdir = tmp_path / "run"
    with pytest.raises(SaveFailed) as failure:
        train_and_evaluate(tiny_config, workdir)
    assert str(failure.value).startswith(
        f"could not write a checkpoint to {workdir / 'checkpoints'} (no space left on device); "
        f"the last complete checkpoint is step {saved[-1]}: "
    )
    assert saved[-1] in Checkpoints(workdir).complete_steps()


def test_a_save_left_half_written_is_removed_on_the_next_start(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, tmp_path)
    leftover = tmp_path / "checkpoints" / "99999.orbax-checkpoint-tmp"
    leftover.mkdir()
    steps = Checkpoints(tmp_path).complete_steps()
    assert not leftover.exists() and steps == [Checkpoints(tmp_path).latest_step()]


def damage(folder):
    """Overwrites every 7th byte of every file under `folder`, as a failing disk might."""
    for path in folder.rglob("*"):
        if path.is_file():
            content = bytearray(path.read_bytes())
            content[::7] = b"\xff" * len(content[::7])
            path.write_bytes(bytes(content))


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["everything", "arrays"])
def test_resuming_falls_back_to_the_newest_checkpoint_that_loads(tiny_config, tmp_path, capsys, damaged):
    tiny_config.train.epochs = 2
    train_and_evaluate(tiny_config, tmp_path)
    first, latest = Checkpoints(tmp_path).complete_steps()
    damage(tmp_path / "checkpoints" / str(latest) / ("" if damaged == "everything" else "state/ocdbt.process_0"))
    capsys.readouterr()
    # Generation and evaluation name the damaged checkpoint and the others.
    message = rf"checkpoint step {latest} .*does not load.*{first}"
    with pytest.raises(CharLSTMError, match=message):
        trained_run.load(tmp_path, "latest")
    tiny_config.train.epochs = 3
    metrics = train_and_evaluate(tiny_config, tmp_path)
    err = capsys.readouterr().err
    assert f"warning: checkpoint step {latest} does not load" in err
    assert (tmp_path / "checkpoints_unreadable" / str(latest)).is_dir()  # Kept aside, not deleted.
    assert [m["epoch"] for m in metrics] == [1, 2, 3]  # Epoch 2 trained again from epoch 1's checkpoint.


# A script (through cli) that saves a mid-epoch checkpoint, as an interrupted run does, in the folder argv[1].
SAVE_MID_EPOCH = """
import jax.numpy as jnp
from charlstm import cli
from charlstm.checkpoints import CheckpointMeta, Checkpoints

def main(arguments):
    checkpoints = Checkpoints(arguments[0])
    checkpoints.save(3, {"params": {"w": jnp.ones(2)}}, CheckpointMeta("ab", {}))
    checkpoints.wait()

cli.run_with_arguments(main)
"""


@pytest.mark.slow
def test_a_mid_epoch_save_logs_nothing_unless_asked(tmp_path):
    quiet = subprocess.run([sys.executable, "-c", SAVE_MID_EPOCH, str(tmp_path / "a")], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    asked = subprocess.run(
        [sys.executable, "-c", SAVE_MID_EPOCH, "--verbosity=0", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert asked.returncode == 0 and "tracked_metric" in asked.stderr

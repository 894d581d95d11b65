import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import CharLSTMError
from charlstm.checkpoints import Checkpoints


def test_best_and_latest_are_both_kept(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    state = {"params": {"w": jnp.arange(3.0)}, "step": 0}
    for step, val_loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5)]:
        checkpoints.save(step, {**state, "step": step}, {"vocab": "ab", "epoch": step // 10}, val_loss)
    checkpoints.wait()  # Saves are written in the background.
    assert checkpoints.manager.all_steps() == [20, 40]
    assert (checkpoints.best_step(), checkpoints.latest_step()) == (20, 40)
    restored, meta = Checkpoints(tmp_path, read_only=True).restore(20, like=state)
    np.testing.assert_array_equal(restored["params"]["w"], [0.0, 1.0, 2.0])
    assert restored["step"] == 20 and meta == {"vocab": "ab", "epoch": 2}


def test_reading_a_folder_without_checkpoints_is_a_user_error(tmp_path):
    with pytest.raises(CharLSTMError, match="no checkpoints"):
        Checkpoints(tmp_path, read_only=True)


def test_params_restore_alone_with_their_own_structure(tmp_path):
    params = {"layers": {0: {"w": jnp.arange(3.0)}}, "head": {"b": jnp.ones(2)}}
    state = {"params": params, "opt_state": {"mu": jnp.zeros(5)}, "step": 7}
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(7, state, {"vocab": "ab"}, val_loss=1.0)
    checkpoints.wait()
    restored = Checkpoints(tmp_path, read_only=True).restore_params(7, like=params)
    assert restored.keys() == params.keys() and list(restored["layers"]) == [0]  # An int key stays an int.
    np.testing.assert_array_equal(restored["layers"][0]["w"], [0.0, 1.0, 2.0])

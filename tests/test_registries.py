"""What reads the registries of cells, protocols and corpora besides config validation: the leaderboard."""

import json

import pytest

from charlstm import protocols, reports


def fake_run(folder, final: dict):
    """A run folder with one finished epoch and `final` as its final_metrics.json."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": 0}))
    metrics = {"epoch": 1, "step": 5, "train_loss": 2.0, "val_loss": 2.0, "val_bpc": 2.9, "seconds": 1.0}
    (folder / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    (folder / "final_metrics.json").write_text(json.dumps(final))
    return folder


@pytest.mark.parametrize("protocol", protocols.NAMES)
def test_the_leaderboard_has_a_final_column_for_each_registered_protocol_a_run_scored(tmp_path, protocol):
    scored = fake_run(tmp_path / "a", {"step": 5, "val": {protocol: {"bpc": 2.5}}})
    unscored = fake_run(tmp_path / "b", {})
    rows = reports.compare_runs([scored, unscored], tmp_path / "c.png")
    assert [row[f"final {protocol} val_bpc"] for row in rows] == [2.5, None]
    assert not [c for c in rows[0] if c.startswith("final ") and c != f"final {protocol} val_bpc"]

"""charlstm.sweep, scripts/sweep.py and scripts/compare.py: grids, run folders, leaderboards, skipping."""

import csv
import json

import pytest
from matplotlib import image

from charlstm import sweep
from charlstm.errors import CharLSTMError
from tests.conftest import assert_one_line_error, run_script

GRID = ("--grid", "model.units=16,32", "--grid", "train.learning_rate=0.01,0.003")
RUNS = {
    "model.units=16,train.learning_rate=0.01",
    "model.units=16,train.learning_rate=0.003",
    "model.units=32,train.learning_rate=0.01",
    "model.units=32,train.learning_rate=0.003",
}


def run_sweep_script(workdir, data_dir, *args):
    return run_script(
        "sweep.py", "--config", "configs/tiny.py", "--workdir", str(workdir),
        "--config.train.epochs=1", "--config.data.max_chars=10000", f"--config.data.dir={data_dir}", *args,
    )


def best_val_bpc(run_dir) -> tuple[float, int]:
    """The lowest val_bpc in a run's metrics.jsonl and its epoch."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = min(metrics, key=lambda m: m["val_bpc"])
    return best["val_bpc"], best["epoch"]


def assert_png(path):
    height, width = image.imread(path, format="png").shape[:2]
    assert 300 <= height <= 2000 and 300 <= width <= 2000


@pytest.fixture(scope="module")
def swept(data_dir, tmp_path_factory):
    """A 2x2 grid on the tiny config, one epoch per run, swept once for this module's tests."""
    workdir = tmp_path_factory.mktemp("sweep") / "sweep1"
    result = run_sweep_script(workdir, data_dir, *GRID)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.slow
def test_a_2x2_grid_gives_4_runs_and_a_leaderboard_led_by_the_best(swept):
    assert {p.name for p in swept.iterdir() if p.is_dir()} == RUNS
    with open(swept / sweep.LEADERBOARD_CSV) as f:
        rows = list(csv.DictReader(f))
    assert {row["run"] for row in rows} == RUNS
    best = {name: best_val_bpc(swept / name) for name in RUNS}
    winner = min(best, key=best.get)
    assert rows[0]["run"] == winner
    assert (float(rows[0]["best val_bpc"]), int(rows[0]["best epoch"])) == best[winner]
    assert rows[0]["model.units"] == winner.split(",")[0].split("=")[1]
    assert [float(row["best val_bpc"]) for row in rows] == sorted(v for v, _ in best.values())
    assert all(name in (swept / sweep.LEADERBOARD_MD).read_text() for name in RUNS)
    assert_png(swept / sweep.CURVES_PNG)


@pytest.mark.slow
def test_rerunning_a_sweep_skips_finished_runs(swept, data_dir):
    leaderboard = (swept / sweep.LEADERBOARD_CSV).read_text()
    result = run_sweep_script(swept, data_dir, *GRID)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("finished, skipped") == 4
    for name in RUNS:  # A run that trained again would have a second start in run_info.jsonl.
        assert len((swept / name / "run_info.jsonl").read_text().splitlines()) == 1
    assert (swept / sweep.LEADERBOARD_CSV).read_text() == leaderboard


@pytest.mark.slow
def test_compare_tabulates_and_plots_two_runs(swept, tmp_path):
    a, b = "model.units=16,train.learning_rate=0.01", "model.units=32,train.learning_rate=0.01"
    result = run_script("compare.py", str(swept / a), str(swept / b), "--plot", str(tmp_path / "both.png"))
    assert result.returncode == 0, result.stderr
    header, _, *rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert "| model.units |" in header and "train.learning_rate" not in header  # Only what differs.
    best = min((a, b), key=lambda name: best_val_bpc(swept / name))
    assert rows[0].startswith(f"| {best} |") and len(rows) == 2
    assert_png(tmp_path / "both.png")


@pytest.mark.slow
def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_script("compare.py", str(tmp_path)), "not a run folder")
    (tmp_path / "notes.txt").write_text("not a run")
    assert_one_line_error(run_script("compare.py", str(tmp_path / "notes.txt")), "is a file, not a run folder")


@pytest.mark.slow
def test_a_sweep_folder_stands_for_its_runs_and_what_is_not_a_run_is_skipped(swept, tmp_path):
    """As `compare.py runs/*` passes them: a sweep folder, one of its runs again, a stray file, an empty folder."""
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "empty").mkdir()
    a_run = swept / "model.units=16,train.learning_rate=0.01"
    runs, skipped = sweep.expand_runs([swept, a_run, tmp_path / "notes.txt", tmp_path / "empty"])
    assert sorted(run.name for run in runs) == sorted(RUNS)
    assert len(skipped) == 2 and "is a file" in skipped[0] and "is not a run folder" in skipped[1]
    inside = sweep.expand_runs(sorted(swept.iterdir()))  # runs/sweep1/*: the leaderboard's files skipped.
    assert {run.name for run in inside[0]} == RUNS and len(inside[1]) == 3


@pytest.mark.slow
def test_compare_takes_a_sweep_folder_and_notes_what_it_skips(swept, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    result = run_script("compare.py", str(swept), str(tmp_path / "notes.txt"), "--plot", str(tmp_path / "all.png"))
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith("| model.units=")]) == len(RUNS)
    assert [line for line in result.stderr.splitlines() if line.startswith("note: ")] == [
        f"note: {str(tmp_path / 'notes.txt')!r} is a file, not a run folder: skipped"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("grid, words", [
    ("model.unitz=16,32", ["unknown config field", "model.unitz"]),
    ("model.units=16,big", ["model.units", "'big'"]),
])
def test_a_bad_grid_is_a_one_line_error_naming_it(tmp_path, data_dir, grid, words):
    assert_one_line_error(run_sweep_script(tmp_path / "sweep", data_dir, "--grid", grid), *words)
    assert not (tmp_path / "sweep").exists()


def test_grid_values_take_their_fields_types(tiny_config):
    grid = sweep.parse_grid(
        ["train.learning_rate=1,0.5", "train.stateful=False,true", "sample.temperatures=(0.5,1),(1.2,)",
         "model.cell=lstm,gru", "seed=0,7"],
        tiny_config,
    )
    assert grid == {
        "train.learning_rate": [1.0, 0.5], "train.stateful": [False, True],
        "sample.temperatures": [(0.5, 1), (1.2,)], "model.cell": ["lstm", "gru"], "seed": [0, 7],
    }
    assert isinstance(grid["train.learning_rate"][0], float)


@pytest.mark.parametrize("spec, words", [
    ("model.units=32.5", ["model.units", "'32.5'", "int"]),
    ("train.stateful=yes", ["train.stateful", "true or false"]),
    ("sample.temperatures=0.5", ["sample.temperatures", "tuple"]),
    ("sample.temperatures=('a',)", ["sample.temperatures"]),
    ("model=1", ["section", "model.cell"]),
    ("model.units", ["FIELD=V1,V2"]),
])
def test_a_bad_grid_names_field_and_value(tiny_config, spec, words):
    with pytest.raises(CharLSTMError) as error:
        sweep.parse_grid([spec], tiny_config)
    assert all(word in str(error.value) for word in words)


def test_a_value_out_of_range_stops_the_sweep_before_any_training(tiny_config, tmp_path):
    grid = sweep.parse_grid(["train.learning_rate=0.01,-1"], tiny_config)
    with pytest.raises(CharLSTMError, match="train.learning_rate"):
        sweep.run_sweep(tiny_config, grid, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_run_names_are_safe_and_distinct():
    assert sweep.run_name({"data.path": "/my corpus.txt", "sample.temperatures": (0.5, 1.2)}) == (
        "data.path=_my_corpus.txt,sample.temperatures=0.5_1.2"
    )


def test_colliding_run_names_are_refused(tiny_config):
    with pytest.raises(CharLSTMError, match="run folder name"):
        sweep.plan(tiny_config, {"data.path": ["a b", "a_b"]})


def test_a_run_stopped_early_counts_as_finished(tiny_config, tmp_path):
    val_losses = [2.0, 1.5, 1.6, 1.7]
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "val_loss": v}) + "\n" for i, v in enumerate(val_losses)
    ))
    tiny_config.train.epochs = 10
    assert not sweep.is_finished(tmp_path, tiny_config)
    tiny_config.train.patience = 2
    assert sweep.is_finished(tmp_path, tiny_config)

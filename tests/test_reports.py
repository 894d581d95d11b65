"""charlstm.reports: curves.png, samples.md and TensorBoard events of a run, and the leaderboard tables."""

import csv
import io
import json
import math

import pytest
from matplotlib import image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlstm import config as config_lib
from charlstm import reports
from charlstm.run_folder import RunFolder, config_differences
from charlstm.train import train_and_evaluate
from tests.conftest import REPO


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tensorboard_events(workdir) -> EventAccumulator:
    events = EventAccumulator(str(workdir / reports.TENSORBOARD_DIR))
    events.Reload()
    return events


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
    """A two-epoch tiny run with TensorBoard on, trained once for this module's tests."""
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    config.log.tensorboard = True
    workdir = tmp_path_factory.mktemp("tiny") / "run"
    train_and_evaluate(config, workdir)
    return workdir


def test_a_run_gets_curves_png_and_samples_md(tiny_run):
    pixels = image.imread(tiny_run / reports.CURVES_PNG, format="png")
    height, width = pixels.shape[:2]
    assert 300 <= height <= 2000 and 300 <= width <= 2000
    assert pixels.std() > 0  # Something is drawn.
    text = (tiny_run / reports.SAMPLES_MD).read_text()
    for record in read_jsonl(tiny_run / "samples.jsonl"):
        assert f"## Epoch {record['epoch']} (val_bpc " in text
        for sample in record["samples"]:
            assert f"«{record['prompt']}»{sample['text']}" in text


def test_curves_png_plots_bits_per_character(tiny_run):
    """Like the compare plots, a run's curves are in bits per character: nats only in *_loss fields."""
    metrics = read_jsonl(tiny_run / "metrics.jsonl")
    (ax,) = reports.run_curves(metrics, "tiny").axes
    train, val = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert train == pytest.approx([m["train_loss"] / math.log(2) for m in metrics])
    assert val == pytest.approx([m["val_bpc"] for m in metrics])
    assert ax.get_ylabel() == "bits per character"


def test_reports_are_rendered_from_the_files_alone(tiny_run, tmp_path):
    before = (tiny_run / reports.SAMPLES_MD).read_text()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("metrics.jsonl", "samples.jsonl"):
        (copy / name).write_text((tiny_run / name).read_text())
    reports.write_run_reports(RunFolder(copy).history())
    assert (copy / reports.SAMPLES_MD).read_text() == before
    assert (copy / reports.CURVES_PNG).read_bytes().startswith(b"\x89PNG")


def test_tensorboard_holds_each_epochs_scalars_and_samples(tiny_run):
    events = tensorboard_events(tiny_run)
    metrics = read_jsonl(tiny_run / "metrics.jsonl")
    assert set(reports.SCALARS) <= set(events.Tags()["scalars"])
    for name in reports.SCALARS:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [m["epoch"] for m in metrics]
        assert [e.value for e in logged] == pytest.approx([m[name] for m in metrics], rel=1e-6)
    assert {
        "samples/temperature_0.5/text_summary",
        "samples/temperature_1.2/text_summary",
    } <= set(events.Tags()["tensors"])


def test_turning_tensorboard_on_or_off_does_not_block_a_resume(tiny_config):
    saved = tiny_config.to_dict()
    del saved["log"]  # A run folder from before config.log existed.
    tiny_config.log.tensorboard = True
    assert config_differences(saved, tiny_config.to_dict()) == []


def test_an_epoch_logged_again_replaces_its_tensorboard_events(tmp_path):
    samples = {"epoch": 0, "prompt": "the ", "samples": [{"temperature": 1.0, "text": "union"}]}
    for epoch, val_bpc in [(1, 3.0), (2, 2.5), (2, 2.0)]:  # Epoch 2 re-run after a crash.
        metrics = {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_bpc": val_bpc, "chars_per_second": 10.0}
        reports.log_epoch_to_tensorboard(RunFolder(tmp_path), metrics, {**samples, "epoch": epoch})
    logged = tensorboard_events(tmp_path).Scalars("val_bpc")
    assert [(e.step, e.value) for e in logged] == [(1, 3.0), (2, 2.0)]


def test_samples_md_marks_the_prompt_and_keeps_the_last_record_of_an_epoch():
    metrics = [{"epoch": 1, "val_bpc": 3.25}]
    samples = [
        {"epoch": 1, "prompt": "old", "samples": [{"temperature": 0.5, "text": "lost"}]},
        {"epoch": 1, "prompt": "we ", "samples": [{"temperature": 0.5, "text": "use ``` fences\nand more"}]},
    ]
    text = reports.samples_markdown(metrics, samples)
    assert "## Epoch 1 (val_bpc 3.250)" in text and "lost" not in text
    assert "````text\n«we »use ``` fences\nand more\n````" in text  # Fenced beyond the text's backticks.


def test_leaderboard_tables_keep_values_whole_in_csv_and_safe_in_markdown():
    row = {"run": "a", "model.units": 64, "best val_bpc": 2.123456, "final window val_bpc": 2.1,
           "final stream val_bpc": None, "best epoch": 3, "epochs": 4, "train seconds": 12.34,
           "sample": "one | two\nthree"}
    markdown = reports.leaderboard_markdown([row]).splitlines()
    assert markdown[0] == (
        "| run | model.units | best val_bpc | final window val_bpc | final stream val_bpc | best epoch | epochs "
        "| train seconds | sample |"
    )
    assert markdown[2] == "| a | 64 | 2.1235 | 2.1000 | — | 3 | 4 | 12.3 | one \\| two ↵ three |"
    (parsed,) = csv.DictReader(io.StringIO(reports.table_csv([row])))
    assert parsed["sample"] == "one | two\nthree" and float(parsed["best val_bpc"]) == 2.123456


def test_the_leaderboard_shows_the_best_checkpoints_final_scores(tiny_run, tmp_path):
    final = json.loads((tiny_run / "final_metrics.json").read_text())
    (row,) = reports.compare_runs([tiny_run], tmp_path / "c.png")
    assert row["final window val_bpc"] == final["val"]["window"]["bpc"]
    assert row["final stream val_bpc"] == final["val"]["stream"]["bpc"]
    assert row["best val_bpc"] == min(m["val_bpc"] for m in read_jsonl(tiny_run / "metrics.jsonl"))

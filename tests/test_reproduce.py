"""scripts/reproduce.py: a run re-run from its folder, the verdict, and bad input leaving the original as it was."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from charlstm import CharLSTMError, data, reproduce, train
from charlstm import config as config_lib
from charlstm.lstm import cpu_kernel
from tests.conftest import REPO, assert_one_line_error, run_script, snapshot


def epoch(number: int, val_loss: float, longest_copy: int = 5) -> dict:
    return {
        "epoch": number, "step": 10 * number, "train_loss": 3.0, "val_loss": val_loss, "val_protocol": "segments",
        "seconds": float(number), "longest_copy": longest_copy, "copied_share": 0.0,
    }


NO_WEIGHTS = {"field": "weights", "difference": None, "why": "not kept"}


def verdict(first: list[dict], second: list[dict]) -> dict:
    return reproduce.judge(reproduce.metric_differences(first, second), NO_WEIGHTS)


def test_the_verdict_is_identical_within_tolerance_or_diverged():
    original = [epoch(1, 2.5), epoch(2, 2.25)]
    timed = [{**m, "seconds": 99.0} for m in original]
    assert verdict(original, timed)["verdict"] == "identical"  # Timings aside.
    close = [epoch(1, 2.5), epoch(2, 2.25 + 1e-6, longest_copy=9)]
    judged = verdict(original, close)
    assert judged["verdict"] == "within tolerance"  # Samples may differ once the losses do.
    assert judged["largest_difference"]["field"] == "val_loss" and judged["samples_differ_from_epoch"] == 2
    assert judged["largest_difference"]["tolerance"] == reproduce.tolerance(2.25, 20)
    far = [epoch(1, 2.5 + 1e-6), epoch(2, 2.3)]
    judged = verdict(original, far)
    assert judged["verdict"] == "diverged"
    assert (judged["diverged_at"]["epoch"], judged["diverged_at"]["field"]) == (2, "val_loss")
    assert (judged["first_difference"]["epoch"], judged["first_difference"]["field"]) == (1, "val_loss")


def test_a_reproduction_that_stopped_earlier_diverged():
    judged = verdict([epoch(1, 2.5), epoch(2, 2.4)], [epoch(1, 2.5)])
    assert judged["verdict"] == "diverged" and judged["diverged_at"]["epoch"] == 2


def test_samples_that_differ_while_the_losses_are_identical_diverged():
    judged = verdict([epoch(1, 2.5)], [epoch(1, 2.5, longest_copy=6)])
    assert judged["verdict"] == "diverged" and judged["diverged_at"]["field"] == "longest_copy"


def test_environment_differences_name_each_field():
    original = {"started": "a", "python": "3.11", "cpu": {"features": ["avx2", "avx512f"]}, "lstm": ["cpu_kernel"]}
    again = {"started": "b", "python": "3.11", "cpu": {"features": ["avx2"]}, "lstm": ["xla"], "git": {}}
    assert reproduce.environment_differences(original, again) == [
        "not recorded by the original: git",
        'cpu.features: only the original has ["avx512f"], only the reproduction []',
        'lstm: ["cpu_kernel"] -> ["xla"]',
    ]


def test_the_reproduction_stops_early_with_the_runs_schedule(tiny_config):
    tiny_config.train.epochs, tiny_config.train.schedule = 5, "cosine"
    config = reproduce.reproduction_config(tiny_config, 2, 3)
    assert (config.train.epochs, config.train.stop_after_epoch, config.eval.final_protocols) == (5, 2, ())
    assert reproduce.reproduction_config(tiny_config, 5, 5).train.stop_after_epoch == 0
    with pytest.raises(CharLSTMError, match="give 1 to 3"):
        reproduce.reproduction_config(tiny_config, 4, 3)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(CharLSTMError, match="not a run folder"):
        reproduce.reproduce(tmp_path, tmp_path / "again")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def original(tmp_path_factory, data_dir):
    """A two-epoch tiny run with a cosine schedule, on a corpus file of its own."""
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    folder = tmp_path_factory.mktemp("original")
    corpus = folder / "corpus.txt"
    shutil.copy(data.load_corpus(config.data).source, corpus)
    config.data.path, config.train.schedule = str(corpus), "cosine"
    train.train_and_evaluate(config, folder / "run")
    return folder / "run"


@pytest.mark.slow
def test_a_run_reproduced_here_is_identical_and_untouched(original, tmp_path):
    before = snapshot(original)
    report = reproduce.reproduce(original, tmp_path / "again")
    assert report["verdict"] == "identical" and report["weights"]["difference"] == 0
    assert report["epochs"] == 2 and not report["environment_differences"]
    report = reproduce.reproduce(original, tmp_path / "first", epochs=1)  # The cosine schedule spans 2 epochs.
    assert report["verdict"] == "identical" and report["epochs"] == 1
    assert snapshot(original) == before


@pytest.mark.slow
@pytest.mark.skipif(not cpu_kernel.available(), reason="the CPU kernel is not built here")
def test_without_the_kernel_it_is_within_tolerance_and_names_the_implementation(original, tmp_path):
    before = snapshot(original)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reproduce.py"), str(original), "--workdir", str(tmp_path / "x"),
         "--json"],
        capture_output=True, text=True, env={**os.environ, "CHARLSTM_CPU_KERNEL": "off"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "within tolerance"
    assert 'lstm.training: ["cpu_kernel"] -> ["xla"]' in report["environment_differences"]
    assert 'variables.CHARLSTM_CPU_KERNEL: null -> "off"' in report["environment_differences"]
    assert snapshot(original) == before


def without(folder, tmp_path, name):
    copy = shutil.copytree(folder, tmp_path / "copy")
    path = copy / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("case, words", [
    ("not a run", ["not a run folder"]),
    ("no metrics", ["no metrics.jsonl"]),
    ("no checkpoint", ["no checkpoint"]),
    ("its own folder", ["original run's folder"]),
    ("a full workdir", ["not empty"]),
    ("too many epochs", ["--epochs 3", "give 1 to 2"]),
    ("a changed corpus", ["changed since", "SHA-256"]),
])
def test_bad_input_is_one_line_and_leaves_the_original_as_it_was(original, tmp_path, case, words):
    run, workdir, extra = original, tmp_path / "again", []
    if case == "not a run":
        run = original.parent
    elif case in ("no metrics", "no checkpoint"):
        run = without(original, tmp_path, "metrics.jsonl" if case == "no metrics" else "checkpoints")
    elif case == "its own folder":
        workdir = original
    elif case == "a full workdir":
        workdir.mkdir()
        (workdir / "notes.txt").write_text("mine\n")
    elif case == "too many epochs":
        extra = ["--epochs", "3"]
    corpus = original.parent / "corpus.txt"
    text, before = corpus.read_bytes(), snapshot(run)
    try:
        if case == "a changed corpus":
            corpus.write_bytes(text + b"one more line.\n")
        result = run_script("reproduce.py", str(run), "--workdir", str(workdir), *extra)
    finally:
        corpus.write_bytes(text)
    assert_one_line_error(result, *words)
    assert snapshot(run) == before
    assert case == "a full workdir" or not workdir.exists() or workdir == original

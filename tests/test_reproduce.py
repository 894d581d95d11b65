"""scripts/reproduce.py: a run re-run from its folder, the verdict, and bad input leaving the original as it was."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from charlstm import CharLSTMError, data, reproduce, tolerance, train, trained_run
from charlstm import config as config_lib
from charlstm.lstm import cpu_kernel
from tests.conftest import REPO, assert_float32_accurate, assert_one_line_error, run_script, snapshot


def epoch(number: int, val_loss: float, longest_copy: int = 5) -> dict:
    return {
        "epoch": number, "step": 10 * number, "train_loss": 3.0, "val_loss": val_loss, "val_protocol": "segments",
        "seconds": float(number), "longest_copy": longest_copy, "copied_share": 0.0,
    }


NO_WEIGHTS = {"field": "weights", "difference": None, "why": "not kept"}
# Standard errors of 1e-3 nats for val_loss, 1e-4 for train_loss.
RESOLUTION = tolerance.Resolution(step=20, protocol="segments", nll_std=1.0, val_chars=10**6, train_chars=10**8)


def verdict(first: list[dict], second: list[dict]) -> dict:
    return reproduce.judge(reproduce.metric_differences(first, second, RESOLUTION), NO_WEIGHTS)


def test_the_verdict_is_identical_within_tolerance_or_diverged():
    original = [epoch(1, 2.5), epoch(2, 2.25)]
    timed = [{**m, "seconds": 99.0} for m in original]
    assert verdict(original, timed)["verdict"] == "identical"  # Timings aside.
    close = [epoch(1, 2.5), epoch(2, 2.25 + 1e-6, longest_copy=9)]
    judged = verdict(original, close)
    assert judged["verdict"] == "within tolerance"  # Samples may differ once the losses do.
    assert judged["largest_difference"]["field"] == "val_loss" and judged["samples_differ_from_epoch"] == 2
    assert judged["largest_difference"]["tolerance"] == RESOLUTION.tolerance("val_loss", 2.25, 20) == 1e-3
    far = [epoch(1, 2.5 + 1e-6), epoch(2, 2.3)]
    judged = verdict(original, far)
    assert judged["verdict"] == "diverged"
    assert (judged["diverged_at"]["epoch"], judged["diverged_at"]["field"]) == (2, "val_loss")
    assert (judged["first_difference"]["epoch"], judged["first_difference"]["field"]) == (1, "val_loss")


def test_the_tolerance_is_the_larger_of_rounding_and_the_standard_error():
    assert RESOLUTION.standard_error("val_loss") == 1e-3 and RESOLUTION.standard_error("train_loss") == 1e-4
    assert math.isclose(RESOLUTION.standard_error("val_bpc"), 1e-3 / math.log(2))
    assert RESOLUTION.standard_error("copied_share") == 0.0
    assert RESOLUTION.tolerance("train_loss", 2.0, 10) == 1e-4  # Few steps: the resolution decides,
    assert RESOLUTION.tolerance("train_loss", 2.0, 10**6) == tolerance.rounding(2.0, 10**6) > 1e-4  # many: rounding.
    assert RESOLUTION.tolerance("copied_share", 0.5, 10) == tolerance.rounding(0.5, 10)


def test_the_resolution_matches_a_float64_reference():
    """Per-character NLLs `[n]` like a model's (mean 1.4, std 1.6 nats) in float32: the standard errors
    against the textbook formula summed in float64, then in float32 for the tolerance."""
    nll = np.random.default_rng(0).gamma(0.77, 1.82, 300_000).astype(np.float32)
    resolution = tolerance.Resolution.of_nll(nll, train_chars=3_000_000, step=7, protocol="window")
    assert (resolution.val_chars, resolution.step, resolution.protocol) == (300_000, 7, "window")

    def standard_errors(x: np.ndarray) -> np.ndarray:
        std = np.sqrt(np.sum(np.square(x - np.sum(x) / x.size)) / (x.size - 1))
        return np.stack([std / np.sqrt(x.size), std / np.sqrt(x.dtype.type(3_000_000))])

    got = [resolution.standard_error("val_loss"), resolution.standard_error("train_loss")]
    expected32, expected64 = standard_errors(nll), standard_errors(nll.astype(np.float64))
    assert_float32_accurate(np.asarray(got), expected32, expected64, "standard errors")


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


def edited(folder, tmp_path, val_loss_change: float):
    """A copy of run `folder` whose last epoch's val_loss (and val_bpc) moved by `val_loss_change` nats."""
    copy = shutil.copytree(folder, tmp_path / f"edited_{val_loss_change:g}")
    metrics = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    metrics[-1]["val_loss"] += val_loss_change
    metrics[-1]["val_bpc"] = metrics[-1]["val_loss"] / math.log(2)
    (copy / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return copy


@pytest.mark.slow
def test_a_change_beyond_the_resolution_diverged_and_one_within_it_did_not(original, tmp_path):
    resolution = tolerance.measure(original)
    best = trained_run.load(original)
    scored = len(best.corpus().val_ids) - best.config.data.seq_length  # The characters val_loss averages.
    assert (resolution.step, resolution.protocol, resolution.val_chars) == (best.step, "segments", scored)
    standard_error = resolution.standard_error("val_loss")
    assert 0 < standard_error < 0.1
    within = reproduce.compare(original, edited(original, tmp_path, standard_error / 2), 2, resolution)
    assert within["verdict"] == "within tolerance" and reproduce.exit_code(within) == 0
    largest = within["largest_difference"]  # val_bpc or val_loss: each is off by half its standard error.
    assert largest["field"] in ("val_bpc", "val_loss")
    assert largest["tolerance"] == resolution.standard_error(largest["field"])
    beyond = reproduce.compare(original, edited(original, tmp_path, -3 * standard_error), 2, resolution)
    assert beyond["verdict"] == "diverged" and reproduce.exit_code(beyond) == 1
    assert (beyond["diverged_at"]["epoch"], beyond["diverged_at"]["field"]) == (2, "val_bpc")
    assert beyond["weights"]["difference"] == 0  # The weights decide identical or not, never diverged.
    assert beyond["resolution"]["standard_errors"]["val_loss"] == standard_error


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

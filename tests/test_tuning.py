"""evaluate.py --tune: settings chosen on the first half of the scored text, the second half reported."""

import json

import numpy as np
import pytest

from charlstm import evaluate, trained_run, tuning
from tests.conftest import assert_one_line_error, run_script


def test_the_halves_split_the_scored_characters_with_their_context():
    ids, first = np.arange(30), 10
    tune, report = tuning.halves(ids, first)
    assert tune.tolist() == list(range(20)) and report.tolist() == list(range(10, 30))


def test_the_chosen_settings_are_the_grids_best_on_the_text_they_were_chosen_on(trained_run_folder):
    run = trained_run.load(trained_run_folder)
    corpus = run.corpus()
    scoring = evaluate.Scoring.from_config(run.config, "dynamic", corpus.train_ids)
    ids = corpus.val_ids[:300]
    grid = {"learning_rate": (1e-4, 1e-2), "decay": (0.0, 0.1)}
    chosen, points = tuning.tune_dynamic(run.graphdef, run.params, ids, scoring, grid)
    assert len(points) == 4 and min(p["bpc"] for p in points) == next(
        p["bpc"] for p in points
        if (p["learning_rate"], p["decay"]) == (chosen.settings["learning_rate"], chosen.settings["decay"]))
    again = evaluate.bits_per_char(evaluate.mean_nll(run.graphdef, run.params, ids, chosen))
    assert again == min(p["bpc"] for p in points)


@pytest.mark.slow
def test_evaluate_tune_reports_the_half_the_choice_never_saw(trained_run_folder):
    result = run_script("evaluate.py", "--workdir", str(trained_run_folder), "--dynamic", "--tune", "--mix_ngram",
                        "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    run = trained_run.load(trained_run_folder)
    val = evaluate.scored_ids(run.corpus().val_ids, run.config)
    assert report["chars"] == len(tuning.halves(val, run.config.data.seq_length)[1]) - run.config.data.seq_length
    assert report["text"].startswith("the second half of") and report["mixture"]["fitted_on"] == "the first half"
    assert len(report["tuned"]["grid"]) == 12 and set(report["tuned"]["chosen"]) == {"learning_rate", "decay"}
    assert_one_line_error(run_script("evaluate.py", "--workdir", str(trained_run_folder), "--tune"), "--tune",
                          "--dynamic")

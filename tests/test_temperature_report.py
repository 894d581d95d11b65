import csv
import math

import numpy as np
import pytest
from matplotlib import image

from charlstm import CharLSTMError, temperature_report
from charlstm.ngram import KneserNey
from charlstm.temperature_report import Sample
from tests.conftest import vocab_of

TRAIN = "the quick brown fox jumps over the lazy dog. "
VOCAB = vocab_of(TRAIN + "#my.it")
TRAIN_IDS = VOCAB.encode(TRAIN)
PROMPT = VOCAB.encode("the ")
KN = KneserNey(TRAIN_IDS, 3, VOCAB.size)


def sample(temperature: float, text: str, model_bpc: float = 2.0, prompt: np.ndarray = PROMPT) -> Sample:
    return Sample(temperature, prompt, VOCAB.encode(text), model_bpc)


def summarise(samples: list[Sample]) -> list[dict]:
    return temperature_report.summarise(samples, TRAIN_IDS, VOCAB, KN)


def test_distinct_n_is_pooled_over_the_samples():
    assert temperature_report.distinct(["abab"], 2) == 2 / 3  # ab, ba, ab.
    assert temperature_report.distinct(["abc", "abc"], 2) == 2 / 4  # Each alone would be 1.
    assert temperature_report.distinct(["ab", "ba"], 2) == 1.0  # No 2-gram spans two samples.
    assert temperature_report.distinct(["a", ""], 2) is None


def test_copied_share_and_longest_copy_are_means_over_the_samples():
    texts = ["my quick brown fox jumps over it", "#" * 25, "dog"]  # Shares 9/13, 0 and none (under 20 chars).
    (row,) = summarise([sample(1.0, text) for text in texts])
    assert row["copied_share"] == pytest.approx((9 / 13 + 0) / 2, rel=1e-15)
    assert row["longest_copy"] == pytest.approx((28 + 0 + 3) / 3, rel=1e-15)
    assert row["distinct_4"] == temperature_report.distinct(texts, 4)


def test_kneser_ney_bpc_is_the_mean_of_per_char_nll_in_bits():
    texts = ["quick fox. ", "lazy #"]
    (row,) = summarise([sample(0.5, text) for text in texts])
    bits = [KN.per_char_nll(np.concatenate([PROMPT, VOCAB.encode(t)]), len(PROMPT)).mean() / math.log(2) for t in texts]
    assert math.isclose(row["kn_bpc"], sum(bits) / 2, rel_tol=1e-12)
    assert row["kn_order"] == 3


def test_a_prompt_shorter_than_the_kneser_ney_context_is_refused():
    with pytest.raises(CharLSTMError, match="longer prompt"):
        summarise([sample(1.0, "quick", prompt=VOCAB.encode("t"))])


def test_rows_are_grouped_and_ordered_by_temperature():
    samples = [sample(1.2, "the fox", 3.0), sample(0.5, "the dog", 1.0), sample(1.2, "a fox", 4.0)]
    rows = summarise(samples)
    assert [(r["temperature"], r["samples"], r["model_bpc"]) for r in rows] == [(0.5, 1, 1.0), (1.2, 2, 3.5)]
    assert list(rows[0]) == list(temperature_report.COLUMNS)
    examples = temperature_report.first_examples(samples, VOCAB)
    assert examples == {0.5: ("the ", "the dog"), 1.2: ("the ", "the fox")}


def test_the_report_files_hold_the_rows(tmp_path):
    samples = [sample(t, text) for t in (0.2, 1.0) for text in ("my quick brown fox jumps over it", "dog")]
    rows = summarise(samples)
    temperature_report.write_report(tmp_path / "report", rows, temperature_report.first_examples(samples, VOCAB), "t")
    with open(tmp_path / "report" / "report.csv", newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [list(p) for p in parsed] == [list(temperature_report.COLUMNS)] * 2
    for row, read in zip(rows, parsed):
        assert {c: float(read[c]) for c in row} == row  # Full precision.
    assert image.imread(tmp_path / "report" / "report.png").ndim == 3  # A PNG that decodes.
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| temperature | samples | model_bpc |" in markdown
    assert "Temperature 0.2:\n\n```text\n«the »my quick brown fox jumps over it\n```" in markdown


def test_a_file_in_the_way_of_the_report_folder_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    rows = summarise([sample(1.0, "dog")])
    for directory in (tmp_path / "taken", tmp_path / "taken" / "report"):
        with pytest.raises(CharLSTMError, match="folder"):
            temperature_report.write_report(directory, rows, {}, "t")
    assert (tmp_path / "taken").read_text() == ""

import json
import math

import numpy as np
import pytest

from charlstm import CharLSTMError, ngram
from charlstm.data import load_corpus
from charlstm.ngram import KneserNey
from tests.conftest import ngram_probabilities, run_script, vocab_of

TEXT = "abracadabra"
VOCAB = vocab_of(TEXT)  # "abcdr"
IDS = VOCAB.encode(TEXT)


def random_text_ids(n: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    """Ids from a sticky random walk, so that longer contexts carry information."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([0, 1, 1, 2, 5], size=n)
    return (np.cumsum(steps) % vocab_size).astype(np.int32)


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_the_distribution_sums_to_one_for_seen_and_unseen_contexts(order):
    vocab_size = 9  # Ids 7 and 8 never occur in training.
    train = random_text_ids(2000, 7)
    model = KneserNey(train, order, vocab_size)
    contexts = [train[100:120], [8, 8, 8, 8, 8, 8, 8, 8], [0, 7, 1, 8, 2, 3, 4, 5, 6]]
    for context in contexts:
        table = ngram_probabilities(model, context)
        assert table.shape == (vocab_size,)
        assert math.isclose(table.sum(), 1.0, rel_tol=1e-12)
        assert np.all(table > 0)


def test_order_2_matches_a_hand_computation_on_abracadabra():
    a, b, r = (VOCAB.chars.index(c) for c in "abr")
    model = KneserNey(IDS, 2, VOCAB.size)
    # Bigrams: ab 2, br 2, ra 2, ac 1, ca 1, ad 1, da 1 -> n1=4, n2=3, D2 = 4 / (4 + 2*3).
    d2 = 4 / 10
    # Continuation counts (distinct left neighbours): a 3 (r, c, d), b/c/d/r 1 each; total 7.
    # n1=4, n2=0 -> D1 = 4 / 4 = 1; unigram = max(N1+ - D1, 0)/7 + D1 * 5 types/7 * 1/V.
    d1 = 1.0
    unigram_a = (3 - d1) / 7 + d1 * 5 / 7 / 5
    unigram_b = 0 + d1 * 5 / 7 / 5
    # Context a: c(a.) = 4 (ab 2, ac, ad) over 3 types; context r: c(r.) = 2 (ra 2), 1 type.
    p_b_after_a = (2 - d2) / 4 + d2 * 3 / 4 * unigram_b
    p_a_after_a = 0 + d2 * 3 / 4 * unigram_a
    p_a_after_r = (2 - d2) / 2 + d2 * 1 / 2 * unigram_a
    assert [level.discount for level in model.levels] == pytest.approx([d1, d2])
    assert ngram_probabilities(model, [a])[b] == pytest.approx(p_b_after_a)  # 0.442857...
    assert ngram_probabilities(model, [a])[a] == pytest.approx(p_a_after_a)
    assert ngram_probabilities(model, [b, r])[a] == pytest.approx(p_a_after_r)  # Only the last char counts.


@pytest.mark.parametrize("order, seq_length", [(1, 0), (3, 2), (4, 6)])
def test_per_char_nll_scores_each_character_after_its_own_context(order, seq_length):
    train = random_text_ids(500, 6, seed=1)
    ids = random_text_ids(40, 6, seed=2)
    model = KneserNey(train, order, 6)
    context = lambda i: ids[i - seq_length : i]
    expected = [-math.log(ngram_probabilities(model, context(i))[ids[i]]) for i in range(seq_length, len(ids))]
    np.testing.assert_allclose(model.per_char_nll(ids, seq_length), expected, rtol=1e-12)


def test_per_char_nll_refuses_an_order_longer_than_the_context():
    with pytest.raises(CharLSTMError, match="seq_length"):
        KneserNey(IDS, 5, VOCAB.size).per_char_nll(IDS, 3)


def test_higher_orders_fit_the_training_text_better():
    train = random_text_ids(3000, 8)
    nll = [KneserNey(train, order, 8).per_char_nll(train, 5).mean() for order in (1, 2, 4, 6)]
    assert all(later < earlier for earlier, later in zip(nll, nll[1:])), nll


def baseline(data_dir, *args):
    return run_script("baseline.py", "--config", "configs/tiny.py", f"--config.data.dir={data_dir}", *args)


def kneser_ney_losses(corpus, orders, seq_length: int) -> dict[int, dict[str, float]]:
    """Each order's mean NLL on each held-out split, from KneserNey itself: what baseline.py must report."""
    losses = {}
    for order in orders:
        model = KneserNey(corpus.train_ids, order, corpus.vocab.size)
        losses[order] = {split: model.per_char_nll(ids, seq_length).mean() for split, ids in corpus.held_out().items()}
    return losses


def test_the_runs_baseline_is_the_order_best_on_validation(tiny_config):
    corpus = load_corpus(tiny_config.data)
    losses = kneser_ney_losses(corpus, (1, 3, 5), 4)
    model = ngram.best_on_validation(corpus, 4, orders=(1, 3, 5, 6))  # 6 needs 5 chars of context: skipped.
    best = min(losses, key=lambda order: losses[order]["val"])
    assert model.order == best
    assert model.per_char_nll(corpus.val_ids, 4).mean() == losses[best]["val"]  # Fitted on the training text.


@pytest.mark.slow
def test_baseline_script_prints_the_order_best_on_validation(data_dir, tiny_config):
    result = baseline(data_dir, "--orders=1,3,5")
    assert result.returncode == 0, result.stderr
    losses = kneser_ney_losses(load_corpus(tiny_config.data), (1, 3, 5), tiny_config.data.seq_length)
    best = min(losses, key=lambda order: losses[order]["val"])
    bpc = losses[best]["val"] / math.log(2)
    assert result.stdout.strip().splitlines()[-1] == f"best on validation: order {best}, val_bpc {bpc:.4f}"


@pytest.mark.slow
def test_baseline_script_reports_kneser_neys_numbers_as_json(data_dir, tiny_config):
    result = baseline(data_dir, "--orders=2,4", "--config.data.test_fraction=0.1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tiny_config.data.test_fraction = 0.1
    corpus = load_corpus(tiny_config.data)
    losses = kneser_ney_losses(corpus, (2, 4), tiny_config.data.seq_length)
    sizes = (len(corpus.train_ids), len(corpus.val_ids), len(corpus.test_ids), corpus.vocab.size)
    assert (report["train_chars"], report["val_chars"], report["test_chars"], report["vocab_size"]) == sizes
    assert [r["order"] for r in report["results"]] == [2, 4]
    for r in report["results"]:
        for split, loss in losses[r["order"]].items():
            assert math.isclose(r[f"{split}_loss"], loss, rel_tol=1e-12)  # The same float64 sums.
            assert math.isclose(r[f"{split}_bpc"], loss / math.log(2), rel_tol=1e-12)
    best = min(report["results"], key=lambda r: r["val_loss"])
    assert report["best"] == {"order": best["order"], "val_bpc": best["val_bpc"], "test_bpc": best["test_bpc"]}


@pytest.mark.slow
def test_baseline_script_rejects_order_zero_in_one_line(data_dir):
    result = baseline(data_dir, "--orders=0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--orders" in lines[0], result.stderr

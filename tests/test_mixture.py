"""Interpolating the LSTM with Kneser-Ney: the end points, a proper distribution, and fitting."""

import jax
import numpy as np
import pytest
from flax import nnx

from charlstm import data, mixture
from charlstm.errors import CharLSTMError
from charlstm.model import CharLSTM
from charlstm.ngram import KneserNey
from tests.conftest import ngram_probabilities

RNG = np.random.default_rng(0)
NLL_MODEL, NLL_NGRAM = RNG.exponential(1.5, 500), RNG.exponential(1.5, 500)


def test_weight_one_gives_the_model_and_weight_zero_the_ngram():
    np.testing.assert_allclose(mixture.mixed_nll(NLL_MODEL, NLL_NGRAM, 1.0), NLL_MODEL, rtol=1e-12)
    np.testing.assert_allclose(mixture.mixed_nll(NLL_MODEL, NLL_NGRAM, 0.0), NLL_NGRAM, rtol=1e-12)


def test_the_mixed_distribution_sums_to_one_and_scores_as_mixed_nll():
    vocab, order = 5, 3
    ids = (np.cumsum(RNG.choice([0, 1, 1, 3], 400)) % vocab).astype(np.int32)
    ngram = KneserNey(ids, order, vocab)
    model = CharLSTM(vocab, 8, 1, rngs=nnx.Rngs(0))
    logits, _ = model(ids[None, :60])
    positions = np.arange(order - 2, 60)  # The next character after ids[:t+1], at least order - 1 of them.
    p_model = np.asarray(jax.nn.softmax(logits[0, positions]), np.float64)
    p_ngram = np.stack([ngram_probabilities(ngram, ids[: t + 1]) for t in positions])
    mixed = mixture.mix(p_model, p_ngram, 0.3)
    np.testing.assert_allclose(mixed.sum(-1), 1.0, rtol=1e-6)
    targets = ids[positions + 1]
    rows = np.arange(len(positions))
    nll = mixture.mixed_nll(-np.log(p_model[rows, targets]), -np.log(p_ngram[rows, targets]), 0.3)
    np.testing.assert_allclose(nll, -np.log(mixed[rows, targets]), rtol=1e-9)


def test_the_fitted_weight_minimises_the_mean_mixed_nll():
    weight = mixture.fit_weight(NLL_MODEL, NLL_NGRAM)
    best = mixture.mixed_nll(NLL_MODEL, NLL_NGRAM, weight).mean()
    for other in (weight - 0.02, weight + 0.02, 0.0, 1.0):
        assert best < mixture.mixed_nll(NLL_MODEL, NLL_NGRAM, other).mean()
    assert mixture.fit_weight(NLL_MODEL, NLL_MODEL + 3.0) > 0.9  # A much worse n-gram gets little weight.


def test_each_half_is_scored_with_the_weight_fitted_on_the_other():
    nll, (w_second, w_first) = mixture.cross_fitted_nll(NLL_MODEL, NLL_NGRAM)
    assert w_second == mixture.fit_weight(NLL_MODEL[250:], NLL_NGRAM[250:])
    np.testing.assert_array_equal(nll[:250], mixture.mixed_nll(NLL_MODEL[:250], NLL_NGRAM[:250], w_second))
    np.testing.assert_array_equal(nll[250:], mixture.mixed_nll(NLL_MODEL[250:], NLL_NGRAM[250:], w_first))


def small_corpus() -> data.Corpus:
    """A corpus of 5 characters whose ids follow a pattern an n-gram can learn."""
    ids = (np.cumsum(RNG.choice([0, 1, 1, 3], 1500)) % 5).astype(np.uint8)
    return data.Corpus(data.Vocab("abcde"), ids[:1000], ids[1000:1250], ids[1250:], "small", "", 1500, 0)


@pytest.mark.parametrize("label, fitted_on", [("val", "halves"), ("text", "halves"), ("test", "validation")])
def test_the_ngram_mixture_fits_its_weight_on_validation_only_for_the_test_split(label, fitted_on):
    """Test scores mix with a weight fitted on validation; any other text cross-fits its halves."""
    corpus, first, order = small_corpus(), 10, 3
    ngram = KneserNey(corpus.train_ids, order, 5)
    scored = corpus.test_ids, RNG.exponential(1.5, len(corpus.test_ids) - first)
    val = corpus.val_ids, RNG.exponential(1.5, len(corpus.val_ids) - first)
    assert mixture.fits_on_validation(label) == (fitted_on == "validation")
    nll, info = mixture.ngram_mixture(corpus, order, first, scored, val if fitted_on == "validation" else None)
    ngram_nll = ngram.per_char_nll(scored[0], first)
    if fitted_on == "validation":
        weight = mixture.fit_weight(val[1], ngram.per_char_nll(val[0], first))
        expected, weights = mixture.mixed_nll(scored[1], ngram_nll, weight), [weight]
    else:
        expected, weights = mixture.cross_fitted_nll(scored[1], ngram_nll)
    np.testing.assert_array_equal(nll, expected)
    assert info["model_weights"] == list(weights) and info["order"] == order
    assert info["ngram_bpc"] == pytest.approx(ngram_nll.mean() / np.log(2))


def test_an_order_whose_context_outgrows_seq_length_is_refused():
    mixture.check_order(21, 20)
    with pytest.raises(CharLSTMError, match="use an order <= seq_length \\+ 1 = 21"):
        mixture.check_order(22, 20)

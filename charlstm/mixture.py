"""Linear interpolation of two character models' next-character probabilities.

p(c | h) = w · p_model(c | h) + (1 − w) · p_ngram(c | h): a mixture of two
distributions is one, and it is scored from each model's NLL of the actual
next character alone. The weight w is fitted by EM on one text and reported on
another, never on the text it was fitted on.

`ngram_mixture` is the policy scripts/evaluate.py applies: a Kneser-Ney model
of the asked order fitted on the run's training text, its weight fitted on
validation when the test split is scored, else on each half of the scored text
and applied to the other.
"""

import numpy as np

from charlstm import evaluate
from charlstm.data import Corpus
from charlstm.errors import CharLSTMError
from charlstm.ngram import KneserNey

# EM stops when the weight moves less than this, or after MAX_ITERATIONS.
TOLERANCE, MAX_ITERATIONS = 1e-7, 500


def mix(p_model: np.ndarray, p_ngram: np.ndarray, weight: float) -> np.ndarray:
    """The interpolated probabilities, of any shape: whole distributions `[..., vocab]` or the actual characters'."""
    return weight * p_model + (1.0 - weight) * p_ngram


def mixed_nll(nll_model: np.ndarray, nll_ngram: np.ndarray, weight: float) -> np.ndarray:
    """NLL in nats `[n]` of each character under `mix`, from each model's NLL `[n]` of it (in log space:
    no probability underflows)."""
    with np.errstate(divide="ignore"):  # log(0) = -inf at the weights 0 and 1 is exact here.
        return -np.logaddexp(np.log(weight) - nll_model, np.log1p(-weight) - nll_ngram)


def fit_weight(nll_model: np.ndarray, nll_ngram: np.ndarray) -> float:
    """The weight of the model that minimises the mean `mixed_nll` on these characters (EM)."""
    if len(nll_model) == 0:
        raise CharLSTMError("no characters to fit the mixture weight on: score a longer text")
    p_model, p_ngram = np.exp(-np.asarray(nll_model, np.float64)), np.exp(-np.asarray(nll_ngram, np.float64))
    weight = 0.5
    for _ in range(MAX_ITERATIONS):
        mixed = mix(p_model, p_ngram, weight)
        new = float(np.mean(weight * p_model / mixed, dtype=np.float64))
        if abs(new - weight) < TOLERANCE:
            return new
        weight = new
    return weight


def cross_fitted_nll(nll_model: np.ndarray, nll_ngram: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """`mixed_nll` `[n]` with the weight fitted on the text's other half (first half scored with the
    weight fitted on the second, and the reverse), and the two weights."""
    half = len(nll_model) // 2
    if half == 0:
        raise CharLSTMError("the mixture needs at least 2 scored characters to fit on one half and score the other")
    w_second = fit_weight(nll_model[half:], nll_ngram[half:])
    w_first = fit_weight(nll_model[:half], nll_ngram[:half])
    nll = np.concatenate([
        mixed_nll(nll_model[:half], nll_ngram[:half], w_second),
        mixed_nll(nll_model[half:], nll_ngram[half:], w_first),
    ])
    return nll, (w_second, w_first)


def check_order(order: int, seq_length: int) -> None:
    """Refuses an n-gram order whose context does not fit in the run's data.seq_length, before any scoring."""
    if order - 1 > seq_length:
        raise CharLSTMError(
            f"--mix_ngram={order} needs {order - 1} characters of context: use an order "
            f"<= seq_length + 1 = {seq_length + 1}"
        )


def fits_on_validation(label: str) -> bool:
    """Whether the mixture scoring `label` ('val', 'test' or 'text') fits its weight on validation: the test
    split does, as a weight is tuned on validation; any other text fits on halves of itself."""
    return label == "test"


def ngram_mixture(
    corpus: Corpus, order: int, first: int, scored: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None = None, validation_name: str = "validation",
) -> tuple[np.ndarray, dict]:
    """The model mixed with a Kneser-Ney model of `order` on `corpus`'s training text: the mixed NLL `[n]`
    of the characters at position >= `first` of `scored` (ids `[first + n]`, the model's NLL `[n]`) and
    what it took (order, Kneser-Ney alone, weights, the text they were fitted on). With `validation`
    (ids and the model's NLL, likewise; `validation_name` says what it is) the weight is fitted there, else
    cross-fitted on the scored halves."""
    (ids, nll), ngram = scored, KneserNey(corpus.train_ids, order, corpus.vocab.size)
    ngram_nll = ngram.per_char_nll(ids, first)
    if validation is not None:
        val_ids, val_nll = validation
        weights = (fit_weight(val_nll, ngram.per_char_nll(val_ids, first)),)
        fitted_on = validation_name
        result = mixed_nll(nll, ngram_nll, weights[0])
    else:
        result, weights = cross_fitted_nll(nll, ngram_nll)
        fitted_on = "the other half of the scored text"
    info = {"order": order, "ngram_bpc": evaluate.bits_per_char(evaluate.average(ngram_nll)),
            "model_weights": list(weights), "fitted_on": fitted_on}
    return result, info

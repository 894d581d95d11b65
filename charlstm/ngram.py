"""An interpolated Kneser-Ney character n-gram model: the bar a neural model must clear.

Counts live in numpy arrays, not dicts: every k-gram gets a dense id, the index
of its key `id(suffix) * V + first char` among the sorted keys of all training
k-grams, where `suffix` is the (k-1)-gram after the first character. Ids of any
length are thus built one character at a time from the right, and a query is
looked up with `np.searchsorted`, so fitting and scoring are vectorised.
`score_orders` and `best_on_validation` make it a run's baseline: fitted on
its training text, scored on its held-out text as the model is.
"""

import dataclasses
import time

import numpy as np

from charlstm import evaluate
from charlstm.data import Corpus
from charlstm.errors import CharLSTMError

# Discount when a level has no count-of-counts to estimate one from (no singletons).
FALLBACK_DISCOUNT = 0.5
# The orders the baseline tries: on the Obama corpus validation bpc falls up to 12 and gains under
# 0.005 bits beyond; fitting and scoring all of them on its 245K training characters takes about 1 s.
ORDERS = tuple(range(1, 13))


@dataclasses.dataclass(frozen=True)
class _Level:
    """The k-grams of one order k and the statistics Kneser-Ney needs of them."""

    keys: np.ndarray  # [n_grams] int64, sorted: id(suffix (k-1)-gram) * V + first char.
    counts: np.ndarray  # [n_grams] float64: raw counts at the top order, else continuation counts.
    context_total: np.ndarray  # [n_contexts] sum of `counts` over the k-grams with that (k-1)-gram prefix.
    context_types: np.ndarray  # [n_contexts] how many of those k-grams have a count > 0.
    discount: float


def discount(counts: np.ndarray) -> float:
    """Absolute discount D = n1 / (n1 + 2 n2) from the counts of counts (Ney et al., 1994)."""
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 > 0 else FALLBACK_DISCOUNT


def _lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each `query` key in sorted `keys`, or -1 where absent (or where query < 0)."""
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where((query >= 0) & (keys[pos] == query), pos, -1)


class KneserNey:
    """Interpolated Kneser-Ney character n-gram model of order N, fitted on training ids.

    P_k(w | h) = max(c(hw) - D_k, 0) / c(h) + D_k * T(h) / c(h) * P_{k-1}(w | h'),
    h' being h without its first character and T(h) the number of w with c(hw) > 0.
    c is the raw count at the top order N and the continuation count (distinct
    characters seen before hw) below it. Each order has one fixed discount
    D_k = n1 / (n1 + 2 n2) from its own counts of counts (plain, not modified,
    KN). Below order 1 sits the uniform distribution 1/V, so no character has
    probability 0; a context never seen at order k defers to order k-1 whole.
    """

    def __init__(self, train_ids: np.ndarray, order: int, vocab_size: int):
        if order < 1:
            raise CharLSTMError(f"n-gram order {order} is invalid: use an order >= 1")
        ids = np.asarray(train_ids, np.int64)
        if len(ids) < order:
            raise CharLSTMError(f"{len(ids)} training ids are fewer than the order {order}: use a lower order")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise CharLSTMError(f"training ids must lie in [0, {vocab_size}): encode with the run's vocabulary")
        self.order, self.vocab_size = order, vocab_size
        self.levels = self._fit(ids)

    def _gram_ids(self, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per order k = 1..N: (sorted unique keys, dense id of the k-gram starting at each position)."""
        n, by_start = len(ids), np.zeros(len(ids) + 1, np.int64)  # The empty 0-gram, id 0, at every start.
        grams = []
        for k in range(1, self.order + 1):
            keys, by_start = np.unique(by_start[1:] * self.vocab_size + ids[: n - k + 1], return_inverse=True)
            grams.append((keys, by_start))
        return grams

    def _fit(self, ids: np.ndarray) -> list[_Level]:
        """Counts, context totals and discounts of every order 1..N."""
        grams = self._gram_ids(ids)
        levels = []
        for k, (keys, by_start) in enumerate(grams, start=1):
            if k == self.order:
                counts = np.bincount(by_start, minlength=len(keys))
            else:  # Distinct left extensions: the (k+1)-grams whose suffix is this k-gram.
                counts = np.bincount(grams[k][0] // self.vocab_size, minlength=len(keys))
            # The prefix (k-1)-gram of each k-gram, read at one place where it occurs.
            first = np.zeros(len(keys), np.int64)
            first[by_start] = np.arange(len(by_start))
            context = grams[k - 2][1][first] if k > 1 else np.zeros(len(keys), np.int64)
            n_contexts = len(grams[k - 2][0]) if k > 1 else 1
            counts = counts.astype(np.float64)
            levels.append(_Level(
                keys=keys,
                counts=counts,
                context_total=np.bincount(context, weights=counts, minlength=n_contexts),
                context_types=np.bincount(context, weights=(counts > 0).astype(np.float64), minlength=n_contexts),
                discount=discount(counts[counts > 0]),
            ))
        return levels

    def _prob(self, windows: np.ndarray) -> np.ndarray:
        """P(windows[:, -1] | windows[:, :-1]) `[m]` for windows `[m, width]`, using orders up to width."""
        m, width = windows.shape
        windows = windows.astype(np.int64)
        prob = np.full(m, 1.0 / self.vocab_size)
        gram = context = np.zeros(m, np.int64)  # Ids of the k-gram ending at the target and its context.
        for k in range(1, min(self.order, width) + 1):
            first_char = windows[:, width - k]
            if k > 1:
                context = _lookup(self.levels[k - 2].keys, context * self.vocab_size + first_char)
            level = self.levels[k - 1]
            gram = _lookup(level.keys, gram * self.vocab_size + first_char)
            safe = np.maximum(context, 0)
            total = np.where(context >= 0, level.context_total[safe], 0.0)
            count = np.where(gram >= 0, level.counts[np.maximum(gram, 0)], 0.0)
            d, seen = level.discount, total > 0
            total = np.where(seen, total, 1.0)
            mixed = (np.maximum(count - d, 0.0) + d * level.context_types[safe] * prob) / total
            prob = np.where(seen, mixed, prob)
        return prob

    def per_char_nll(self, ids: np.ndarray, seq_length: int) -> np.ndarray:
        """NLL in nats `[len(ids) - seq_length]` of every id at position >= seq_length.

        Mirrors charlstm.evaluate.per_char_nll, so the mean is comparable with a model's val_loss;
        each id is predicted from its preceding N-1 ids, which must fit within seq_length.
        """
        if self.order - 1 > seq_length:
            raise CharLSTMError(
                f"an order-{self.order} model needs {self.order - 1} characters of context but "
                f"seq_length is {seq_length}: use an order <= seq_length + 1"
            )
        ids = np.asarray(ids)
        if len(ids) <= seq_length:
            return np.zeros(0)
        windows = np.lib.stride_tricks.sliding_window_view(ids, self.order)[seq_length - self.order + 1 :]
        return -np.log(self._prob(windows))


def score_orders(corpus: Corpus, orders: list[int], seq_length: int) -> list[dict]:
    """Per order: a Kneser-Ney model fitted on `corpus`'s training text, its loss and bpc on each held-out
    split (characters at position >= `seq_length`), and the seconds that took."""
    results = []
    for order in orders:
        start = time.perf_counter()
        model = KneserNey(corpus.train_ids, order, corpus.vocab.size)
        result = {"order": order}
        for split, ids in corpus.held_out().items():
            loss = evaluate.average(model.per_char_nll(ids, seq_length))
            result.update({f"{split}_loss": loss, f"{split}_bpc": evaluate.bits_per_char(loss)})
        results.append({**result, "seconds": time.perf_counter() - start})
    return results


def best_on_validation(corpus: Corpus, seq_length: int, orders: tuple[int, ...] = ORDERS) -> KneserNey:
    """The run's baseline: the Kneser-Ney model of the order in `orders` (those whose context fits in
    `seq_length`) with the lowest validation loss, fitted on `corpus`'s training text."""
    usable = [order for order in orders if order - 1 <= seq_length]
    best = min(score_orders(corpus, usable, seq_length), key=lambda result: result["val_loss"])
    return KneserNey(corpus.train_ids, best["order"], corpus.vocab.size)

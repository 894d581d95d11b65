"""evaluate.py --tune: dynamic evaluation's settings chosen on the first half of the scored text and
reported on the second, which the choice never saw (the n-gram mixture's weight is fitted on the first
half too), so the number printed is not tuned on itself.

The grid, small enough to run in seconds on a validation split: GRID's learning rates x decays, at the
run's eval.dynamic.segment_length.
"""

import dataclasses
import itertools

import numpy as np
from flax import nnx

from charlstm import evaluate
from charlstm.protocols.base import Scoring

GRID = {"learning_rate": (1e-5, 3e-5, 1e-4, 3e-4), "decay": (0.0, 1e-3, 1e-2)}


def halves(ids: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The scored characters of `ids` (those at position >= first) in two halves, each with the `first`
    characters before it as context: the second half's context is the end of the first."""
    middle = first + (len(ids) - first) // 2
    return ids[:middle], ids[middle - first :]


def tune_dynamic(
    graphdef: nnx.GraphDef, params, ids: np.ndarray, scoring: Scoring, grid: dict = GRID
) -> tuple[Scoring, list[dict]]:
    """The dynamic `scoring` whose learning rate and decay from `grid` give the lowest bpc on `ids`, and
    every point of the grid with its bpc there."""
    points = []
    for learning_rate, decay in itertools.product(grid["learning_rate"], grid["decay"]):
        settings = {**scoring.settings, "learning_rate": learning_rate, "decay": decay}
        nll = evaluate.per_char_nll(graphdef, params, ids, dataclasses.replace(scoring, settings=settings))
        points.append({"learning_rate": learning_rate, "decay": decay,
                       "bpc": evaluate.bits_per_char(evaluate.average(nll))})
    best = min(points, key=lambda point: point["bpc"])
    settings = {**scoring.settings, "learning_rate": best["learning_rate"], "decay": best["decay"]}
    return dataclasses.replace(scoring, settings=settings), points

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import CharLSTMError, beam, sampling
from charlstm.evaluate import sequence_nll
from charlstm.model import create_model, split_model
from tests.conftest import assert_float32_accurate, float32_tolerance, in_float64

PROMPT = np.asarray([2, 0, 1, 1, 0, 2], np.int32)
VOCAB, LENGTH = 3, 4  # 81 continuations: few enough to score every one.


def two_layer_model(config, vocab_size: int):
    """The tiny config's model with two layers, so the beam gathers a state of several carries."""
    config.model.num_layers = 2
    return split_model(create_model(config, vocab_size))


def log_probs_of(params, graphdef, prompt: np.ndarray, continuations: np.ndarray) -> jax.Array:
    """Total log-probability `[n]` of each continuation `[n, length]` after `prompt`, scored as evaluation
    scores text: one pass over prompt + continuation from a zero state, summed from the prompt's end."""
    text = jnp.concatenate([jnp.broadcast_to(prompt, (len(continuations), len(prompt))), continuations], axis=1)
    nll, _ = sequence_nll(graphdef, params, text[:, :-1], text[:, 1:], None)
    return -jnp.sum(nll[:, len(prompt) - 1 :], axis=1)


def reference(graphdef, params, prompt, continuations) -> tuple[jax.Array, np.ndarray]:
    """log_probs_of in float32 and in float64."""
    args = (params, graphdef, jnp.asarray(prompt), jnp.asarray(continuations))
    return log_probs_of(*args), in_float64(log_probs_of, *args)


@pytest.mark.parametrize("width", [VOCAB ** (LENGTH - 1), VOCAB**LENGTH])
def test_a_beam_that_keeps_every_prefix_finds_the_best_continuations(tiny_config, width):
    """With one row per prefix of length - 1, the last step sees every continuation: the beam is then
    exhaustive search, its rows the `width` best by the evaluation's scores, in their order."""
    graphdef, params = two_layer_model(tiny_config, VOCAB)
    everything = np.asarray(list(itertools.product(range(VOCAB), repeat=LENGTH)), np.int32)
    all32, all64 = reference(graphdef, params, PROMPT, everything)
    result = beam.beam_search(graphdef, params, PROMPT, width, LENGTH)
    index = result.ids @ VOCAB ** np.arange(LENGTH - 1, -1, -1)  # Row of `everything` each result is.
    assert result.ids.shape == (width, LENGTH) and len(set(index)) == width
    assert_float32_accurate(result.log_probs, np.asarray(all32)[index], all64[index], "beam log-probabilities")
    assert np.all(np.diff(result.log_probs) <= 0)
    tolerance = float32_tolerance(all32, all64)
    assert np.all(np.diff(all64[index]) <= tolerance)  # Best first, as the reference ranks them.
    left_out = np.delete(all64, index)
    assert all64[index].min() >= left_out.max(initial=-np.inf) - tolerance


def test_log_probabilities_are_the_evaluations_scores_of_the_chosen_ids(tiny_config):
    graphdef, params = two_layer_model(tiny_config, 13)
    result = beam.beam_search(graphdef, params, PROMPT, 5, 30)
    assert len({tuple(row) for row in result.ids}) == 5
    expected32, expected64 = reference(graphdef, params, PROMPT, result.ids)
    assert_float32_accurate(result.log_probs, expected32, expected64, "beam log-probabilities")


def test_a_beam_of_one_is_greedy_decoding(tiny_config):
    graphdef, params = two_layer_model(tiny_config, 13)
    greedy = sampling.generate_ids(
        graphdef, params, jnp.asarray(PROMPT), jnp.zeros(1), jax.random.key(0)[None], length=30
    )
    np.testing.assert_array_equal(beam.beam_search(graphdef, params, PROMPT, 1, 30).ids, np.asarray(greedy))


@pytest.mark.parametrize("width, length, prompt, words", [
    (0, 4, PROMPT, "width 0"),
    (2, 0, PROMPT, "length 0"),
    (2, 4, PROMPT[:0], "no characters"),
    (VOCAB**LENGTH + 1, LENGTH, PROMPT, "at most 81"),
])
def test_impossible_beams_are_refused_with_the_fix(tiny_config, width, length, prompt, words):
    graphdef, params = two_layer_model(tiny_config, VOCAB)
    with pytest.raises(CharLSTMError, match=words):
        beam.beam_search(graphdef, params, prompt, width, length)

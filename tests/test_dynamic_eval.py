"""Dynamic evaluation: scored before adapted, and the update rule computed by hand."""

import jax
import numpy as np
import pytest
from flax import nnx

from charlstm import CharLSTMError, dynamic_eval, evaluate
from charlstm.model import CharLSTM, split_model

VOCAB = 6


def model_and_text(n: int, seed: int = 0):
    model = CharLSTM(VOCAB, 12, 1, rngs=nnx.Rngs(seed))
    ids = np.asarray(jax.random.randint(jax.random.key(seed), (n,), 0, VOCAB), np.int32)
    return split_model(model), ids


def stream(graphdef, params, ids, first):
    return evaluate.per_char_nll(graphdef, params, ids, evaluate.Scoring("stream", first, 1, 1, 1))


@pytest.mark.slow
def test_the_first_segment_is_scored_by_the_trained_weights_and_adaptation_helps_on_a_repeat():
    """A random segment repeated: scoring after the update would already lower the first copy; honest
    dynamic evaluation scores it exactly as the static model does and only gains on the second copy."""
    (graphdef, params), train_ids = model_and_text(3000)
    length, first = 20, 1
    segment = np.asarray(jax.random.randint(jax.random.key(9), (length,), 0, VOCAB), np.int32)
    ids = np.concatenate([segment, segment, segment[:1]])
    settings = dynamic_eval.Settings(learning_rate=3e-2, decay=0.0, segment_length=length)
    dynamic = dynamic_eval.per_char_nll(graphdef, params, ids, first, train_ids, settings)
    static = stream(graphdef, params, ids, first)
    first_copy = slice(0, length - first)
    np.testing.assert_allclose(dynamic[first_copy], static[first_copy], rtol=1e-6)
    second_copy = slice(length - first, 2 * length - first)
    assert dynamic[second_copy].mean() < static[second_copy].mean() - 0.1


def test_no_character_is_scored_by_weights_that_saw_it_or_anything_after_it():
    (graphdef, params), ids = model_and_text(200, seed=1)
    settings = dynamic_eval.Settings(learning_rate=1e-2, decay=0.01, segment_length=10)
    before = dynamic_eval.per_char_nll(graphdef, params, ids, 5, ids, settings)
    changed = ids.copy()
    changed[58] = (changed[58] + 1) % VOCAB  # Inside the segment whose inputs 50..59 predict 51..60.
    after = dynamic_eval.per_char_nll(graphdef, params, changed, 5, ids, settings)
    np.testing.assert_array_equal(after[: 58 - 5], before[: 58 - 5])  # Everything before it, bit for bit.
    assert after[58 - 5] != before[58 - 5]


def test_two_updates_match_the_rule_computed_by_hand():
    """θ1 = θ0 − lr·g0/d; θ2 = θ1 − lr·g1/d + min(decay·rms/mean, 1)·(θ0 − θ1); segment 2 scored with θ2."""
    (graphdef, params), train_ids = model_and_text(3000, seed=2)
    length, lr, decay = 8, 5e-3, 0.3
    ids = train_ids[:3 * length + 1]
    rms = dynamic_eval.gradient_rms(graphdef, params, train_ids, length)
    leaves = jax.tree.leaves(rms)
    mean = sum(float(x.sum()) for x in leaves) / sum(x.size for x in leaves)

    def loss(p, k, state):
        model = nnx.merge(graphdef, p)
        logits, state = model(ids[None, k * length : (k + 1) * length], state)
        nll = -jax.nn.log_softmax(logits[0])[np.arange(length), ids[k * length + 1 : (k + 1) * length + 1]]
        return nll.mean(), (nll, state)

    state = nnx.merge(graphdef, params).initial_state(1)
    theta, expected = params, []
    for k in range(3):
        grads, (nll, state) = jax.grad(loss, has_aux=True)(theta, k, state)
        expected.append(nll)
        theta = jax.tree.map(
            lambda p, g, r, p0: (
                p - lr * g / (r + dynamic_eval.EPS_SHARE * mean) + np.minimum(decay * r / mean, 1) * (p0 - p)
            ),
            theta, grads, rms, params,
        )
    settings = dynamic_eval.Settings(learning_rate=lr, decay=decay, segment_length=length)
    got = dynamic_eval.per_char_nll(graphdef, params, ids, 1, train_ids, settings)
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=2e-5)


@pytest.mark.parametrize("fields, flag", [
    ({"learning_rate": 0.0}, "--dynamic_lr=0.0"),
    ({"learning_rate": float("nan")}, "--dynamic_lr=nan"),
    ({"decay": 1.5}, "--dynamic_decay=1.5"),
    ({"decay": -0.1}, "--dynamic_decay=-0.1"),
    ({"segment_length": 0}, "--dynamic_segment=0"),
])
def test_settings_out_of_range_are_named(fields, flag):
    with pytest.raises(CharLSTMError, match=flag):
        dynamic_eval.Settings(**fields).check()

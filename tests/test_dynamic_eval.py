"""The dynamic protocol: scored before adapted, the update rule computed by hand, its settings from config."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from charlstm import CharLSTMError, evaluate
from charlstm import config as config_lib
from charlstm.model import CharLSTM, split_model
from charlstm.protocols import dynamic as dynamic_eval
from charlstm.train import train_and_evaluate
from tests.conftest import assert_float32_accurate, in_float64, run_script

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
    dynamic = dynamic_eval.adapted_nll(graphdef, params, ids, first, train_ids, settings)
    static = stream(graphdef, params, ids, first)
    first_copy = slice(0, length - first)
    np.testing.assert_allclose(dynamic[first_copy], static[first_copy], rtol=1e-6)
    second_copy = slice(length - first, 2 * length - first)
    assert dynamic[second_copy].mean() < static[second_copy].mean() - 0.1


def test_no_character_is_scored_by_weights_that_saw_it_or_anything_after_it():
    (graphdef, params), ids = model_and_text(200, seed=1)
    settings = dynamic_eval.Settings(learning_rate=1e-2, decay=0.01, segment_length=10)
    before = dynamic_eval.adapted_nll(graphdef, params, ids, 5, ids, settings)
    changed = ids.copy()
    changed[58] = (changed[58] + 1) % VOCAB  # Inside the segment whose inputs 50..59 predict 51..60.
    after = dynamic_eval.adapted_nll(graphdef, params, changed, 5, ids, settings)
    np.testing.assert_array_equal(after[: 58 - 5], before[: 58 - 5])  # Everything before it, bit for bit.
    assert after[58 - 5] != before[58 - 5]


@pytest.mark.slow
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

    def by_hand(params, rms, mean):
        state, theta, expected = None, params, []
        for k in range(3):
            grads, (nll, state) = jax.grad(loss, has_aux=True)(theta, k, state)
            expected.append(nll)
            theta = jax.tree.map(
                lambda p, g, r, p0: (
                    p - lr * g / (r + dynamic_eval.EPS_SHARE * mean) + jnp.minimum(decay * r / mean, 1) * (p0 - p)
                ),
                theta, grads, rms, params,
            )
        return jnp.concatenate(expected)

    scoring = evaluate.Scoring("dynamic", 1, 1, 1, 1, {"learning_rate": lr, "decay": decay, "segment_length": length},
                               train_ids)
    got = evaluate.per_char_nll(graphdef, params, ids, scoring)
    expected32, expected64 = by_hand(params, rms, mean), in_float64(by_hand, params, rms, mean)
    assert_float32_accurate(got, expected32, expected64, "dynamic NLL")


@pytest.mark.parametrize("field, value", [
    ("learning_rate", 0.0), ("learning_rate", float("nan")), ("decay", 1.5), ("decay", -0.1), ("segment_length", 0),
])
def test_settings_out_of_range_are_named_as_config_fields(field, value):
    """The settings are config.eval.dynamic: validation names the field, as scoring with them does."""
    config = config_lib.default_config()
    config.eval.dynamic[field] = value
    with pytest.raises(CharLSTMError, match=f"config field eval.dynamic.{field}={value}"):
        config_lib.validate(config)
    (graphdef, params), ids = model_and_text(100)
    with pytest.raises(CharLSTMError, match=f"eval.dynamic.{field}={value} is invalid"):
        evaluate.per_char_nll(graphdef, params, ids, evaluate.Scoring.from_config(config, "dynamic", ids))


def evaluate_json(workdir, *args: str) -> dict:
    result = run_script("evaluate.py", "--workdir", str(workdir), "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_script_flags_are_the_config_settings(trained_run_folder):
    """--dynamic and its flags score as --protocol dynamic with the eval.dynamic fields they stand for."""
    head = "--config.eval.max_chars=200"
    by_flags = evaluate_json(trained_run_folder, head, "--dynamic", "--dynamic_lr=1e-3", "--dynamic_segment=30")
    by_config = evaluate_json(trained_run_folder, head, "--protocol", "dynamic",
                              "--config.eval.dynamic.learning_rate=1e-3", "--config.eval.dynamic.segment_length=30")
    assert by_flags == by_config and by_flags["protocol"] == "dynamic (lr 0.001, decay 0.001, segment 30)"


@pytest.mark.slow
def test_training_scores_the_best_checkpoint_dynamically_when_the_config_asks(tiny_config, tmp_path):
    """'dynamic' in eval.final_protocols: final_metrics.json holds the score evaluate.py gives the run."""
    tiny_config.train.epochs = 1
    tiny_config.eval.final_protocols, tiny_config.eval.max_chars = ("dynamic",), 200
    tiny_config.eval.dynamic.segment_length = 30
    train_and_evaluate(tiny_config, tmp_path)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    result = evaluate_json(tmp_path, "--protocol", "dynamic")
    assert final["protocols"] == ["dynamic"] and result["chars"] == final["val"]["dynamic"]["chars"] == 200
    assert result["val_loss"] == pytest.approx(final["val"]["dynamic"]["loss"], rel=1e-6)

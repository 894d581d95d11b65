import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from charlstm import sampling
from charlstm.model import CharLSTM
from charlstm.train import split_model

VOCAB = 13


@pytest.fixture(scope="module")
def model():
    return CharLSTM(VOCAB, 16, 2, rngs=nnx.Rngs(0))


def generate(model, prompt, temperatures, seeds, length=12, top_k=0, top_p=1.0):
    graphdef, params = split_model(model)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    return np.asarray(
        sampling.generate_ids(
            graphdef, params, jnp.asarray(prompt), jnp.asarray(temperatures, jnp.float32), keys, length, top_k, top_p
        )
    )


def argmax_by_rerunning_the_window(model, prompt, length):
    """The lab's way: re-run the model over the whole text for each new character."""
    text = list(prompt)
    for _ in range(length):
        logits, _ = model(jnp.asarray([text]))
        text.append(int(jnp.argmax(logits[0, -1])))
    return text[len(prompt) :]


def test_greedy_equals_step_by_step_argmax(model):
    prompt = [1, 5, 2, 2, 7, 0, 3]
    expected = argmax_by_rerunning_the_window(model, prompt, 12)
    for temperature in (0.0, 1e-4):
        np.testing.assert_array_equal(generate(model, prompt, [temperature], [0])[0], expected)


def test_a_fixed_seed_repeats_and_another_differs(model):
    prompt = [1, 2, 3]
    a = generate(model, prompt, [1.0], [7], length=40)
    b = generate(model, prompt, [1.0], [7], length=40)
    c = generate(model, prompt, [1.0], [8], length=40)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_top_k_one_is_greedy(model):
    prompt = [4, 4, 1]
    greedy = generate(model, prompt, [0.0], [0])
    np.testing.assert_array_equal(generate(model, prompt, [1.5], [3], top_k=1), greedy)


def test_temperatures_in_one_batch_equal_separate_calls(model):
    prompt = [0, 1, 2, 3]
    batch = generate(model, prompt, [0.5, 1.0, 2.0], [4, 5, 6], length=30)
    for row, (temperature, seed) in enumerate([(0.5, 4), (1.0, 5), (2.0, 6)]):
        np.testing.assert_array_equal(batch[row], generate(model, prompt, [temperature], [seed], length=30)[0])


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = jnp.log(jnp.asarray([[0.15, 0.5, 0.05, 0.3]]))
    kept = lambda p: np.isfinite(np.asarray(sampling.filter_logits(logits, 0, p)))[0].tolist()
    assert kept(0.5) == [False, True, False, False]
    assert kept(0.8) == [False, True, False, True]
    assert kept(0.81) == [True, True, False, True]
    assert kept(1.0) == [True, True, True, True]


def test_top_k_keeps_the_k_largest():
    logits = jnp.asarray([[0.1, 3.0, -1.0, 2.0]])
    kept = np.isfinite(np.asarray(sampling.filter_logits(logits, 2, 1.0)))[0].tolist()
    assert kept == [False, True, False, True]

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from charlstm import data, sampling
from charlstm.lstm import cpu_kernel
from charlstm.model import CharLSTM, split_model
from tests.conftest import assert_float32_accurate, in_float64

VOCAB = 13
# The copies of the compiled kernel's loops this CPU runs (none without the kernel).
KERNEL_LOOPS = cpu_kernel.loops_here() if cpu_kernel.available() else []


@pytest.fixture(scope="module", params=["auto", "xla"])
def model(request):
    """Two layers; 'auto' samples in the compiled kernel's loop where it loaded, 'xla' as a scan of XLA's cell."""
    return CharLSTM(VOCAB, 16, 2, lstm_impl=request.param, rngs=nnx.Rngs(0))


def generate(model, prompt, temperatures, seeds, length=12, top_k=0, top_p=1.0):
    graphdef, params = split_model(model)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    return np.asarray(
        sampling.generate_ids(
            graphdef, params, jnp.asarray(prompt), jnp.asarray(temperatures, jnp.float32), keys, length, top_k, top_p
        )
    )


def argmax_by_rerunning_the_window(model, prompt, length):
    """The lab's way: re-run the model over the whole text for each new character.

    The text sits in a buffer of its final size (one compile): the model is causal, so
    the zeros after position i do not change the logits at i.
    """
    graphdef, params = split_model(model)
    logits_of = jax.jit(lambda params, text: nnx.merge(graphdef, params)(text[None])[0][0])
    text = np.zeros(len(prompt) + length, np.int32)
    text[: len(prompt)] = prompt
    for i in range(len(prompt), len(text)):
        text[i] = int(jnp.argmax(logits_of(params, jnp.asarray(text))[i - 1]))
    return text[len(prompt) :].tolist()


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


def test_stepping_the_state_gives_the_probabilities_of_rerunning_the_window(model):
    """The sampler's path (prime, then one cell step per character) against the lab's, after 100 characters."""
    graphdef, params = split_model(model)
    prompt = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (1, 100)), jnp.int32)

    @jax.jit
    def stepped(params, prompt):
        model = nnx.merge(graphdef, params)
        step = lambda carry, ids: (sampling.advance(model, ids[:, None], carry[1]), None)
        (logits, _), _ = jax.lax.scan(step, sampling.advance(model, prompt[:, :1], None), prompt[:, 1:].T)
        return logits

    def window(params):
        return jax.nn.softmax(nnx.merge(graphdef, params)(prompt)[0][:, -1])

    expected32, expected64 = window(params), in_float64(window, params)
    assert_float32_accurate(jax.nn.softmax(stepped(params, prompt)), expected32, expected64, "probabilities")


# A next-character distribution far from uniform, its ids not in order of probability.
SKEWED = np.asarray([0.05, 0.30, 0.02, 0.15, 0.10, 0.25, 0.01, 0.12])


def model_with_fixed_next_char_probabilities(probs: np.ndarray) -> CharLSTM:
    """A model whose logits are log(probs) after any text: the head ignores the LSTM (zero kernel)."""
    model = CharLSTM(len(probs), 4, 1, rngs=nnx.Rngs(0))
    model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
    model.head.bias[...] = jnp.log(jnp.asarray(probs, jnp.float32))
    return model


def tempered_and_filtered(probs: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """What the sampler should draw from, by definition: probs^(1/T) renormalised, then the k most
    likely (0 = all), then the smallest most likely set whose renormalised mass reaches top_p."""
    tempered = probs ** (1 / temperature)
    order = np.argsort(-tempered)[: top_k or len(probs)]
    kept_mass = tempered[order] / tempered[order].sum()
    order = order[: np.searchsorted(np.cumsum(kept_mass), top_p) + 1]
    expected = np.zeros(len(probs))
    expected[order] = tempered[order] / tempered[order].sum()
    return expected


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (0.5, 0, 1.0), (1.0, 0, 1.0), (2.0, 0, 1.0),  # Temperature alone.
    (1.0, 3, 1.0),  # Top-k alone.
    (1.0, 0, 0.75),  # Top-p alone: 0.70 of the mass lies before the fourth most likely id, which is kept.
    (0.5, 0, 0.9), (2.0, 5, 0.8),  # Top-p on the tempered distribution, after top-k.
])
def test_draws_follow_the_tempered_and_filtered_probabilities(temperature, top_k, top_p):
    expected = tempered_and_filtered(SKEWED, temperature, top_k, top_p)
    graphdef, params = split_model(model_with_fixed_next_char_probabilities(SKEWED))
    rows, length = 2_000, 50  # Every step draws from the same distribution with its own uniform: iid draws.
    keys = jax.random.split(jax.random.key(0), rows)
    ids = sampling.generate_ids(
        graphdef, params, jnp.asarray([0]), jnp.full(rows, temperature), keys, length, top_k, top_p
    )
    draws = rows * length
    observed = np.bincount(np.asarray(ids).ravel(), minlength=len(SKEWED)) / draws
    # Each id's count is binomial(draws, p): allow 5 standard deviations, sqrt(p (1 - p) / draws), at most
    # 0.008 here; a correct sampler fails this with probability about 6e-7 per id. Where p = 0 the bound
    # is 0: a filtered-out id must never be drawn.
    bound = 5 * np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(observed - expected) <= bound), (observed.round(4), expected.round(4))


def test_a_tiny_top_p_is_greedy(model):
    prompt = [4, 4, 1]
    greedy = generate(model, prompt, [0.0], [0])
    np.testing.assert_array_equal(generate(model, prompt, [1.5], [3], top_p=1e-6), greedy)


def test_a_shorter_sample_is_the_start_of_a_longer_one(model):
    long = generate(model, [1, 2, 3], [1.0, 0.7], [5, 6], length=300)
    short = generate(model, [1, 2, 3], [1.0, 0.7], [5, 6], length=129)
    np.testing.assert_array_equal(long[:, : short.shape[1]], short)


def test_a_temperatures_samples_do_not_depend_on_the_other_temperatures():
    temperatures, keys = sampling.sample_rows((0.5, 1.0), 3, seed=7)
    alone_temperatures, alone_keys = sampling.sample_rows((1.0,), 3, seed=7)
    assert temperatures == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0] and alone_temperatures == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(jax.random.key_data(keys[3:]), jax.random.key_data(alone_keys))


def test_texts_are_cut_after_the_stop_string(model):
    graphdef, params = split_model(model)
    vocab = data.Vocab("abcdefghijklm")
    sample = ml_collections.ConfigDict({"length": 30, "top_k": 0, "top_p": 1.0, "stop": ""})
    (full,) = sampling.sample_texts(graphdef, params, vocab, np.asarray([1, 2]), [0.0], jax.random.key(0)[None], sample)
    sample.stop = full[5:7]
    (cut,) = sampling.sample_texts(graphdef, params, vocab, np.asarray([1, 2]), [0.0], jax.random.key(0)[None], sample)
    assert cut == full[: full.index(sample.stop) + 2] and len(cut) <= 7
    assert sampling.cut_at_stop("one. two.", ".") == "one." and sampling.cut_at_stop("one", "x") == "one"


def joined(chunks) -> sampling.Chunk:
    """sample_chunks' chunks as one, all steps in order."""
    chunks = list(chunks)
    fields = ("ids", "model_log_probs", "sampling_log_probs")
    return sampling.Chunk(*(np.concatenate([getattr(c, f) for c in chunks], axis=1) for f in fields))


def teacher_forced_log_probs(model, prompt, ids, temperatures):
    """The log-probabilities of drawn ids `[rows, length]` after `prompt`, under the model and under each row's
    tempered distribution (0 where greedy), from the model run over the whole text: in float32 and float64."""
    graphdef, params = split_model(model)

    def log_probs(params, temperatures):
        text = jnp.concatenate([jnp.broadcast_to(prompt, (ids.shape[0], len(prompt))), ids], axis=1)
        logits = nnx.merge(graphdef, params)(text[:, :-1])[0][:, len(prompt) - 1 :]
        t = temperatures[:, None, None]
        scaled = (logits - logits.max(-1, keepdims=True)) / jnp.maximum(t, 1e-6)
        model_lp, sampling_lp = (
            jnp.take_along_axis(jax.nn.log_softmax(x), ids[..., None], -1)[..., 0] for x in (logits, scaled)
        )
        return model_lp, jnp.where(t[..., 0] > 0, sampling_lp, 0.0)

    return log_probs(params, temperatures), in_float64(log_probs, params, temperatures)


@pytest.mark.skipif(not KERNEL_LOOPS, reason="the compiled CPU kernel is not loaded")
@pytest.mark.parametrize("loops", KERNEL_LOOPS)
def test_the_kernels_loop_draws_the_scans_ids_with_accurate_log_probabilities(loops):
    """sample_chunk's loop in the compiled kernel (each copy of its loops) against the XLA scan: two layers over
    an embedding, a tied head with its projection; greedy and tempered rows, 36 of them (two blocks of rows on
    two cores), streamed in chunks of 64, 64 and 2 steps (the state carried; the last reads weights in place)."""
    models = {
        impl: CharLSTM(VOCAB, 16, 2, embed_dim=8, tie_weights=True, lstm_impl=impl, rngs=nnx.Rngs(1))
        for impl in ("cpu_kernel", "xla")
    }
    assert sampling.kernel_samples(models["cpu_kernel"]) and not sampling.kernel_samples(models["xla"])
    prompt, temperatures = jnp.asarray([1, 2, 3, 4]), jnp.tile(jnp.asarray([0.0, 0.7, 1.3]), 12)
    keys = jnp.tile(jnp.stack([jax.random.key(s) for s in (1, 2, 3)]), 12)
    in_use = cpu_kernel.loops_in_use()
    cpu_kernel.use_loops(loops)
    try:
        drawn = {
            impl: joined(sampling.sample_chunks(*split_model(m), prompt, temperatures, keys, 130, stream=True))
            for impl, m in models.items()
        }
    finally:
        cpu_kernel.use_loops(in_use)
    ids = drawn["xla"].ids
    np.testing.assert_array_equal(ids[3:], np.tile(ids[:3], (11, 1)))  # Rows with the same key draw alike.
    references = teacher_forced_log_probs(models["xla"], prompt, jnp.asarray(ids), temperatures)
    for impl, chunk in drawn.items():
        np.testing.assert_array_equal(chunk.ids, ids, err_msg=impl)
        log_probs = (chunk.model_log_probs, chunk.sampling_log_probs)
        assert_float32_accurate(log_probs, *references, f"{impl} sampler's log-probabilities")

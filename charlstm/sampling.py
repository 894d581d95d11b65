"""Stateful batched sampling: prime the LSTM on the prompt once, then one cell step per character.

The steps run in compiled chunks with the state carried between them (where the compiled CPU kernel runs
the model's LSTM layers and no top-k or top-p is asked, a chunk is one call of its sampling loop), so text
can be handed out as it comes (streaming) and Ctrl-C is seen between chunks;
a chunk's length is the only shape besides the rows and the prompt length, and
the random numbers are drawn for the whole sample up front, so chunking never
changes the text. Temperature, top-k and top-p are traced values: changing
them never recompiles. Each step also returns the drawn character's
log-probability under the model and under the sampling distribution.
"""

import collections
import dataclasses
import functools
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from charlstm import lstm
from charlstm.data import Vocab
from charlstm.lstm import cpu_kernel
from charlstm.model import CharLSTM, RecurrentState

# Steps per iteration of the compiled loop: at batch 1 on CPU, about 7% faster than 1.
UNROLL = 4
# The LSTM implementation of one-character steps when the config says 'auto' and the loop does not run in the
# compiled kernel (kernel_samples): XLA's cell. The kernel's one-step call costs more at batch 1 (the headline
# model's sampler: 246K characters/s against 277K).
STEP_IMPL = "xla"
# Steps per compiled call when streaming: text reaches the reader every STREAM_CHUNK characters.
STREAM_CHUNK = 64
# Chunks dispatched ahead of the one being read, so the host waits little.
IN_FLIGHT = 2
# Most steps per compiled call otherwise: long samples run in a few equal calls, so Ctrl-C is seen.
LONGEST_CHUNK = 4096
# Steps whose uniform numbers are drawn at once: a sample of any length holds one block of them.
UNIFORM_BLOCK = 2**16


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Masks logits `[batch, vocab]` outside the top-k (0 = all) and the top-p nucleus.

    The nucleus is the smallest set of most likely characters whose probability
    reaches `top_p`; top_p=1 keeps everything.
    """
    ordered = -jnp.sort(-logits, axis=-1)
    k = jnp.where(top_k > 0, top_k, logits.shape[-1])
    kth_largest = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), -1)
    logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    ordered = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = mass_before < top_p
    smallest_kept = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < smallest_kept, -jnp.inf, logits)


def sampling_logits(
    logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, filtered: bool
) -> jax.Array:
    """The logits `[rows, vocab]` a row draws from: divided by its temperature, then top-k/top-p filtered
    (`filtered` False skips the sorts)."""
    scaled = (logits - jnp.max(logits, axis=-1, keepdims=True)) / jnp.maximum(temperature, 1e-6)[:, None]
    return filter_logits(scaled, top_k, top_p) if filtered else scaled


def sample_next(
    uniform: jax.Array, logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, filtered: bool
) -> jax.Array:
    """Next ids `[rows]` from logits `[rows, vocab]` and one uniform number in [0, 1) per row; temperature 0 = greedy.

    Inverse-CDF sampling: the first id whose cumulative weight exceeds u times
    the total, so one random number per character; an id of weight 0 is never
    drawn.
    """
    return draw(uniform, logits, sampling_logits(logits, temperature, top_k, top_p, filtered), temperature)


def draw(uniform: jax.Array, logits: jax.Array, scaled: jax.Array, temperature: jax.Array) -> jax.Array:
    """sample_next's draw from the `sampling_logits` `scaled`; the argmax of `logits` where temperature is 0."""
    weights = jnp.exp(scaled)
    # A cumulative sum as a matmul with a triangle of ones: on CPU faster than jnp.cumsum at this size.
    triangle = jnp.triu(jnp.ones((logits.shape[-1],) * 2, weights.dtype))
    cumulative = jnp.matmul(weights, triangle, precision=jax.lax.Precision.HIGHEST)
    drawn = jnp.sum(cumulative <= uniform[:, None] * cumulative[:, -1:], axis=-1)
    return jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def log_prob_of(logits: jax.Array, ids: jax.Array) -> jax.Array:
    """log p(ids) `[rows]` under the softmax of float32 logits `[rows, vocab]`."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, ids[:, None], -1)[:, 0]


def for_steps(model: CharLSTM) -> CharLSTM:
    """`model` set up for one-character steps: its LSTM layers on 'auto' run STEP_IMPL (the prompt, many
    steps in one call, keeps the config's choice)."""
    for layer in model.layers:
        if layer.lstm_impl == "auto":
            layer.lstm_impl = STEP_IMPL
    return model


def advance(model: CharLSTM, ids: jax.Array, state: RecurrentState | None) -> tuple[jax.Array, RecurrentState]:
    """Feeds ids `[rows, time]` from `state` (None = zeros) -> next-char logits `[rows, vocab]` and the new state."""
    logits, state = model(ids, state)
    return logits[:, -1], state


@functools.partial(jax.jit, static_argnames=("graphdef", "rows"))
def _prime(graphdef: nnx.GraphDef, params, ids: jax.Array, state, rows: int) -> tuple[jax.Array, RecurrentState]:
    model = nnx.merge(graphdef, params)
    return advance(model, jnp.broadcast_to(ids, (rows, ids.shape[0])), state)


def prime(
    graphdef: nnx.GraphDef, params, prompt_ids: np.ndarray, rows: int, in_pieces: bool = False
) -> tuple[jax.Array, RecurrentState]:
    """The logits `[rows, vocab]` after a prompt `[prompt_len]` and the state there, for `rows` identical rows.

    One call, compiled per prompt length; `in_pieces` runs the prompt in pieces
    of power-of-two lengths (its length's binary digits) with the state carried,
    so that any prompt compiles at most log2 of its length shapes (a server's
    requests), at the price of last-bit differences from the one call.
    """
    prompt_ids = np.asarray(prompt_ids, np.int32)
    if not in_pieces:
        return _prime(graphdef, params, prompt_ids, None, rows)
    state, at = None, 0
    for bit in reversed(range(len(prompt_ids).bit_length())):
        if len(prompt_ids) >> bit & 1:
            logits, state = _prime(graphdef, params, prompt_ids[at : at + 2**bit], state, rows)
            at += 2**bit
    return logits, state


@functools.partial(jax.jit, static_argnames="size")
def uniform_block(keys: jax.Array, block: int, size: int) -> jax.Array:
    """The uniform numbers `[rows, size]` of steps block * UNIFORM_BLOCK onwards, row r's from keys[r]
    alone: block 0 from the key itself (a sample up to UNIFORM_BLOCK long draws uniform(key, (length,))),
    block b from fold_in(key, b)."""
    keys = jnp.where(block == 0, keys, jax.vmap(jax.random.fold_in, (0, None))(keys, block))
    return jax.vmap(lambda key: jax.random.uniform(key, (size,)))(keys)


def kernel_samples(model: CharLSTM) -> bool:
    """Whether sample_chunk's whole loop runs in the compiled CPU kernel (cpu_kernel.sample_steps): every layer
    an LSTM without rounds whose implementation (its lstm_impl, 'auto' included) is the kernel here."""
    return all(
        layer.cell == "lstm" and layer.rounds is None
        and lstm.select(layer.lstm_impl, layer.recurrent_kernel[...].dtype) == "cpu_kernel"
        for layer in model.layers
    )


def kernel_chunk(model: CharLSTM, carry, uniforms: jax.Array, temperatures: jax.Array):
    """sample_chunk's steps, one per column of uniforms `[rows, steps]`, in one call of the compiled kernel."""
    logits, state = carry
    layers, units = model.layers, model.layers[0].units
    above = layers[1:]
    empty = jnp.zeros((0, units, 4 * units), jnp.float32)
    inputs = jnp.stack([layer.input_kernel[...] for layer in above]) if above else empty
    biases = jnp.stack([layer.bias[...] for layer in above]) if above else empty[:, 0]
    recurrent = jnp.stack([layer.recurrent_kernel[...] for layer in layers])
    ids, model_log_probs, sampling_log_probs, state, logits = cpu_kernel.sample_steps(
        model.input_table(), recurrent, inputs, biases, *model.head_weights(), jnp.stack([jnp.stack(c) for c in state]),
        logits, uniforms, temperatures,
    )
    carry = logits, tuple((h, c) for h, c in state)
    return carry, jnp.stack([ids.astype(jnp.float32), model_log_probs, sampling_log_probs])


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "filtered"))
def sample_chunk(graphdef, params, carry, uniforms, at, temperatures, top_k, top_p, *, steps: int, filtered: bool):
    """`steps` steps from `carry` (the logits and state) with the uniforms `[rows, n]` from column `at`
    -> the carry after them, and per step `[rows, steps]` the drawn ids, their log-probabilities under
    the model (temperature 1) and under the distribution they were drawn from (0 where greedy). Without
    top-k or top-p, in the compiled kernel where it runs the model (kernel_samples), else as a scan."""
    model = nnx.merge(graphdef, params)
    uniforms = jax.lax.dynamic_slice_in_dim(uniforms, at, steps, axis=1)
    if not filtered and kernel_samples(model):
        return kernel_chunk(model, carry, uniforms, temperatures)
    model = for_steps(model)

    def step(carry, uniform):
        logits, state = carry
        scaled = sampling_logits(logits, temperatures, top_k, top_p, filtered)
        ids = draw(uniform, logits, scaled, temperatures)
        drawn_from = jnp.where(temperatures > 0, log_prob_of(scaled, ids), 0.0)
        return advance(model, ids[:, None], state), (ids, log_prob_of(logits, ids), drawn_from)

    carry, outputs = jax.lax.scan(step, carry, uniforms.T, unroll=UNROLL)
    ids, model_log_probs, sampling_log_probs = outputs
    # One array `[3, rows, steps]` (ids exact in float32): one transfer per chunk to the host, not three.
    return carry, jnp.stack([ids.astype(jnp.float32), model_log_probs, sampling_log_probs]).transpose(0, 2, 1)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive steps of every row: ids and the two log-probabilities (nats), all `[rows, steps]`."""

    ids: np.ndarray
    model_log_probs: np.ndarray
    sampling_log_probs: np.ndarray


def chunk_length(length: int, stream: bool) -> int:
    """Steps per compiled call: STREAM_CHUNK when streaming, else `length` in as few equal calls of at
    most LONGEST_CHUNK steps as it takes (one compiled shape; under one chunk of padding). Both divide
    UNIFORM_BLOCK when the sample is longer than it."""
    if stream:
        return min(STREAM_CHUNK, length)
    if length > UNIFORM_BLOCK:
        return LONGEST_CHUNK
    return math.ceil(length / math.ceil(length / LONGEST_CHUNK))


def sample_chunks(
    graphdef: nnx.GraphDef,
    params,
    prompt_ids: jax.Array,
    temperatures: jax.Array,
    keys: jax.Array,
    length: int,
    top_k: int = 0,
    top_p: float = 1.0,
    stream: bool = False,
    prime_in_pieces: bool = False,
) -> Iterator[Chunk]:
    """Continues one prompt `[prompt_len]` (at least 1 id) once per row, `length` steps in Chunks.

    Row r samples at `temperatures[r]` with its own `keys[r]`, so a row's text
    does not depend on which other rows share the batch, and a shorter output
    is a prefix of a longer one from the same key. `stream` hands out
    STREAM_CHUNK steps at a time; either way the ids are the same.
    `prime_in_pieces`: see prime(). IN_FLIGHT
    chunks are dispatched ahead of the one being read.
    """
    steps = chunk_length(length, stream)
    block_size = min(math.ceil(length / steps) * steps, UNIFORM_BLOCK)
    carry = prime(graphdef, params, prompt_ids, temperatures.shape[0], prime_in_pieces)
    yield from continue_chunks(graphdef, params, carry, keys, temperatures, top_k, top_p, length, steps, block_size)


def continue_chunks(
    graphdef: nnx.GraphDef, params, carry, keys: jax.Array, temperatures: jax.Array, top_k, top_p, length: int,
    steps: int, block_size: int,
) -> Iterator[Chunk]:
    """`length` steps from `carry` (logits `[rows, vocab]` and the state, as prime() gives) in Chunks of
    `steps`, row r drawing from keys[r] (uniform_block's blocks of `block_size`: at least `length` rounded
    up to `steps`, or UNIFORM_BLOCK, which `steps` divides). top_k and top_p are numbers, or `[rows, 1]`
    arrays (one per row, for rows of several requests). IN_FLIGHT chunks are dispatched ahead of the one
    being read."""
    filtered = bool(np.any(np.asarray(top_k) > 0) or np.any(np.asarray(top_p) < 1))
    in_flight = collections.deque()
    for at in range(0, length, steps):
        block, offset = divmod(at, UNIFORM_BLOCK)
        if offset == 0:
            uniforms = uniform_block(keys, block, block_size)
        carry, outputs = sample_chunk(
            graphdef, params, carry, uniforms, offset, temperatures, top_k, top_p, steps=steps, filtered=filtered
        )
        in_flight.append((at, outputs))
        if len(in_flight) > IN_FLIGHT:
            yield _read(*in_flight.popleft(), length)
    while in_flight:
        yield _read(*in_flight.popleft(), length)


def _read(at: int, outputs: jax.Array, length: int) -> Chunk:
    """A dispatched chunk's outputs, starting at step `at`, on the host; steps past `length` dropped."""
    ids, model_log_probs, sampling_log_probs = np.asarray(outputs)[:, :, : length - at]
    return Chunk(ids.astype(np.int32), model_log_probs, sampling_log_probs)


def generate_ids(
    graphdef: nnx.GraphDef,
    params,
    prompt_ids: jax.Array,
    temperatures: jax.Array,
    keys: jax.Array,
    length: int,
    top_k: int = 0,
    top_p: float = 1.0,
) -> np.ndarray:
    """The ids `[rows, length]` sample_chunks draws, in one array."""
    chunks = list(sample_chunks(graphdef, params, prompt_ids, temperatures, keys, length, top_k, top_p))
    return np.concatenate([c.ids for c in chunks], axis=1)


def sample_rows(temperatures: tuple[float, ...], num_samples: int, seed: int) -> tuple[list[float], jax.Array]:
    """Rows for `num_samples` samples at each temperature: their temperatures and keys `[rows]`.

    Sample s draws from fold_in(key(seed), s) at every temperature, so its text
    does not depend on which other temperatures are asked for.
    """
    rows = [(t, s) for t in temperatures for s in range(num_samples)]
    keys = jnp.stack([jax.random.fold_in(jax.random.key(seed), s) for _, s in rows])
    return [t for t, _ in rows], keys


def cut_at_stop(text: str, stop: str) -> str:
    """`text` up to and including the first `stop`; all of it when `stop` is "" or absent."""
    end = text.find(stop) if stop else -1
    return text if end < 0 else text[: end + len(stop)]


def sample_texts(
    graphdef: nnx.GraphDef,
    params,
    vocab: Vocab,
    prompt_ids: np.ndarray,
    temperatures: list[float],
    keys: jax.Array,
    sample: ml_collections.ConfigDict,
) -> list[str]:
    """One continuation of `prompt_ids` per row with the `sample` config's settings, decoded, cut at `sample.stop`."""
    ids = generate_ids(
        graphdef, params, jnp.asarray(prompt_ids), jnp.asarray(temperatures, jnp.float32), keys,
        sample.length, sample.top_k, sample.top_p,
    )
    return [cut_at_stop(vocab.decode(row), sample.stop) for row in ids]

"""Stateful batched sampling: prime the LSTM on the prompt once, then one cell step per character.

Temperature, top-k and top-p are traced values, so changing them never
recompiles; only the number of rows, the prompt length and the output
length shape the compiled program.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx


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


def sample_next(
    keys: jax.Array, logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array
) -> jax.Array:
    """Next ids `[rows]` from logits `[rows, vocab]`, one key and temperature per row; 0 = greedy."""
    greedy = jnp.argmax(logits, axis=-1)
    scaled = filter_logits(logits / jnp.maximum(temperature, 1e-6)[:, None], top_k, top_p)
    drawn = jax.vmap(jax.random.categorical)(keys, scaled)
    return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "length"))
def generate_ids(
    graphdef: nnx.GraphDef,
    params,
    prompt_ids: jax.Array,
    temperatures: jax.Array,
    keys: jax.Array,
    length: int,
    top_k: jax.Array | int = 0,
    top_p: jax.Array | float = 1.0,
) -> jax.Array:
    """Continues one prompt `[prompt_len]` once per row -> ids `[rows, length]`.

    Row r samples at `temperatures[r]` with its own `keys[r]`, so a row's text
    does not depend on which other rows share the batch.
    """
    model = nnx.merge(graphdef, params)
    prompt = jnp.broadcast_to(prompt_ids, (temperatures.shape[0], prompt_ids.shape[0]))
    logits, state = model(prompt)

    def step(carry, index):
        logits, state = carry
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, index)
        ids = sample_next(step_keys, logits, temperatures, top_k, top_p)
        logits, state = model(ids[:, None], state)
        return (logits[:, -1], state), ids

    _, ids = jax.lax.scan(step, (logits[:, -1], state), jnp.arange(length))
    return ids.T

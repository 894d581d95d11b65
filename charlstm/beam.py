"""Beam search over characters: the `width` most likely continuations of a prompt, with their log-probabilities.

The prompt primes one state (sampling.advance), then one compiled scan keeps
`width` rows of state: each step scores every row's vocab candidates, keeps the
`width` best totals, gathers the chosen rows' states and records backpointers,
from which the ids are read back at the end. It compiles once per width, length
and prompt length.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm.errors import CharLSTMError
from charlstm.sampling import advance, for_steps


@dataclasses.dataclass(frozen=True)
class BeamResult:
    """The continuations beam search kept, best first."""

    ids: np.ndarray  # `[width, length]` int32.
    log_probs: np.ndarray  # `[width]` float32: each row's sum of per-step log-softmax (natural log, temperature 1).


def beam_search(graphdef: nnx.GraphDef, params, prompt_ids: np.ndarray, width: int, length: int) -> BeamResult:
    """The `width` best continuations of `length` characters after `prompt_ids` `[prompt_len]`, best first.

    Rows are distinct sequences: at the first step all rows hold the same state,
    so only one of them is live. CharLSTMError for a width or length below 1, an
    empty prompt, or a width above the number of distinct continuations.
    """
    if width < 1 or length < 1:
        raise CharLSTMError(f"beam width {width} and length {length} must both be at least 1: raise them")
    if len(prompt_ids) < 1:
        raise CharLSTMError("the prompt to continue has no characters: give at least one")
    vocab_size = nnx.merge(graphdef, params).vocab_size
    # vocab_size >= 2 gives vocab_size ** width.bit_length() > width: no huge power for long outputs.
    if width > vocab_size ** min(length, width.bit_length()):
        raise CharLSTMError(
            f"beam width {width} is more than the {vocab_size ** length} continuations of {length} characters "
            f"over a vocabulary of {vocab_size}: use a width of at most {vocab_size ** length}"
        )
    ids, log_probs = _beam_search(graphdef, params, jnp.asarray(prompt_ids, jnp.int32), width=width, length=length)
    return BeamResult(np.asarray(ids), np.asarray(log_probs))


@functools.partial(jax.jit, static_argnames=("graphdef", "width", "length"))
def _beam_search(graphdef, params, prompt_ids, *, width: int, length: int):
    """Ids `[width, length]` and their total log-probabilities `[width]`, best first."""
    model = nnx.merge(graphdef, params)
    logits, state = advance(model, jnp.broadcast_to(prompt_ids, (width, prompt_ids.shape[0])), None)
    totals = jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf)  # One live row: the others would repeat it.
    model = for_steps(model)

    def step(carry, _):
        logits, state, totals = carry
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [width, vocab]
        totals, flat = jax.lax.top_k((totals[:, None] + log_probs).reshape(-1), width)
        rows, ids = jnp.divmod(flat, log_probs.shape[-1])
        state = jax.tree.map(lambda carried: carried[rows], state)
        logits, state = advance(model, ids[:, None], state)
        return (logits, state, totals), (rows, ids)

    (_, _, totals), (rows, ids) = jax.lax.scan(step, (logits, state, totals), length=length)

    def back(row, step_choices):
        """From the rows kept after a step `[width]` to those before it, collecting that step's ids."""
        rows_t, ids_t = step_choices
        return rows_t[row], ids_t[row]

    _, chosen = jax.lax.scan(back, jnp.arange(width), (rows, ids), reverse=True)
    return chosen.T, totals

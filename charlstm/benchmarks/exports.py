"""Characters per second at batch 1 of a run's exports beside the JAX sampler, in one run: the NumPy
sampler (charlstm.portable), onnxruntime stepping the ONNX one-step function as docs/export.md
samples from it, and charlstm.sampling, batched and streamed (as generate.py prints one sample)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from charlstm import export, sampling
from charlstm.benchmarks import Model
from charlstm.benchmarks.generation import read_stream
from charlstm.benchmarks.timing import fastest
from charlstm.data import Vocab


def onnxruntime_generate(session, prompt_ids: np.ndarray, length: int, temperature: float, seed: int) -> list[int]:
    """`length` ids after `prompt_ids` from an onnxruntime session of the one-step function: one
    session.run per character, the draw in NumPy."""
    state = {i.name: np.zeros([1 if isinstance(d, str) else d for d in i.shape], np.float32)
             for i in session.get_inputs() if i.name != "id"}
    rng, ids = np.random.default_rng(seed), list(prompt_ids)
    for i in range(len(prompt_ids) + length - 1):
        logits, *carry = session.run(None, {"id": np.array([ids[i]]), **state})
        state = dict(zip(state, carry))
        if i >= len(prompt_ids) - 1:
            p = np.exp((logits[0] - logits.max()) / temperature)
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return ids[len(prompt_ids) :]


def export_section(config: ml_collections.ConfigDict, vocab: Vocab, model: Model, length: int, repeats: int) -> dict:
    """Characters per second at batch 1 and temperature 1 after a seq_length prompt: `length` per call,
    the fastest of `repeats` calls. `config` and `vocab` are the run's (or the defaults and any
    `model.vocab_size` characters, for a fresh model)."""
    import onnxruntime  # The [export] extra: only this section needs it.

    graphdef, params = model.graphdef, model.params
    portable = export.portable_model(config, vocab, params, {})
    session = onnxruntime.InferenceSession(export.onnx_bytes(portable))
    prompt_ids = np.arange(model.seq_length) % vocab.size
    prompt = vocab.decode(prompt_ids)
    temperatures, keys = jnp.ones(1), jax.random.key(0)[None]
    calls = {
        "jax": functools.partial(sampling.generate_ids, graphdef, params, prompt_ids, temperatures, keys, length),
        "jax_streamed": functools.partial(read_stream, graphdef, params, prompt_ids, temperatures, keys, length),
        "numpy": functools.partial(portable.generate, prompt, length, 1.0),
        "onnxruntime": functools.partial(onnxruntime_generate, session, prompt_ids, length, 1.0, 0),
    }
    speeds = {}
    for name, call in calls.items():
        call()
        speeds[name] = length / fastest(call, repeats)
    return {"export_chars_per_second_batch_1": speeds}

"""Characters per second of the stateful sampler (charlstm.sampling: prime on a seq_length prompt
once, then one cell step per character in compiled chunks; also streamed at batch 1) against the lab's method on the
same model, at batch 1 and 64. The lab's method, as its generate() did it: for every new character,
the window as one-hot rows, the compiled model over all seq_length of them, the lab's sample() on
the host, the window shifted by one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from charlstm import sampling
from charlstm.benchmarks import Model
from charlstm.benchmarks.timing import fastest
from charlstm.lstm import cpu_kernel
from charlstm.model import vocab_axes

BATCH_SIZES = (1, 64)


@functools.partial(jax.jit, static_argnames="graphdef")
def last_probs(graphdef: nnx.GraphDef, params, windows: jax.Array) -> jax.Array:
    """Next-character probabilities `[batch, vocab]` from the model run over whole windows: ids
    `[batch, seq_length]`, or one-hot rows `[batch, seq_length, vocab]` as the lab fed them."""
    logits, _ = nnx.merge(graphdef, params)(windows)
    return jax.nn.softmax(logits[:, -1])


def lab_sample(probs: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """The lab's sample() on the host, for each row of `probs` `[batch, vocab]`: reweight, draw one id."""
    weights = np.exp(np.log(probs.astype(np.float64)) / temperature)
    cdf = np.cumsum(weights / weights.sum(-1, keepdims=True), axis=-1)
    return np.minimum((cdf < rng.random((len(cdf), 1))).sum(-1), cdf.shape[-1] - 1)


def lab_generate(graphdef: nnx.GraphDef, params, windows: np.ndarray, length: int, vocab_size: int) -> np.ndarray:
    """`length` ids per row of `windows` `[batch, seq_length]` by the lab's method: per character, the
    window as one-hot rows (ids for a model with an embedding), the model over all of it, the lab's
    sample() on the host, and the window shifted by the new character."""
    rng = np.random.default_rng(0)
    one_hot = None if "embed" in params else np.eye(vocab_size, dtype=np.float32)
    for _ in range(length):
        inputs = windows if one_hot is None else one_hot[windows]
        ids = lab_sample(np.asarray(last_probs(graphdef, params, inputs)), 1.0, rng)
        windows = np.concatenate([windows[:, 1:], ids[:, None].astype(windows.dtype)], axis=1)
    return windows


def step_weight_bytes(params) -> int:
    """Bytes of weights one character's step reads at batch 1: every parameter once, but of the input table
    that character ids index (model.vocab_axes: a 2-D parameter whose rows are characters) one row."""
    tables = {path for path, axis in vocab_axes(params).items() if axis == 0}
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        key = tuple(getattr(part, "key", getattr(part, "idx", None)) for part in path)
        total += leaf[0].nbytes if key in tables and leaf.ndim == 2 else leaf.nbytes
    return total


def read_bytes_per_second(n_bytes: int, repeats: int, passes: int = 2000) -> float:
    """How fast `n_bytes` of weights can be read again and again (from cache, when they fit): by the CPU
    kernel's vectorised sum where it loaded, else by a compiled loop of matrix-vector products, as a
    one-character step's matmul reads its weights, each vector depending on the previous pass."""
    if cpu_kernel.available():
        return cpu_kernel.read_bytes_per_second(n_bytes, passes, repeats)
    weights = jnp.ones((max(n_bytes // 256, 1), 64), jnp.float32)
    read = jax.jit(lambda w: jax.lax.fori_loop(0, passes, lambda i, t: jnp.sum(w @ jnp.full(64, t)) * 1e-9, 0.0))
    read(weights).block_until_ready()
    return passes * weights.nbytes / fastest(lambda: read(weights), repeats)


def read_stream(graphdef: nnx.GraphDef, params, prompt, temperatures, keys, length: int) -> int:
    """Streams a sample to the host chunk by chunk, as generate.py prints one; the characters read."""
    chunks = sampling.sample_chunks(graphdef, params, prompt, temperatures, keys, length, stream=True)
    return sum(chunk.ids.shape[1] for chunk in chunks)


def generate_section(model: Model, length: int, lab_length: int, repeats: int) -> dict:
    """Characters per second of the stateful sampler (`length` per call) and of the lab's method
    (`lab_length` per call: each costs the same, so fewer suffice), per batch size; the fastest of
    `repeats` calls counts. Beside them, the memory-bound limit at batch 1: the weights a step reads
    (step_weight_bytes), read once per character at the rate read_bytes_per_second reads them."""
    graphdef, params, vocab_size, seq_length = model
    prompt = jnp.arange(seq_length, dtype=jnp.int32) % vocab_size
    stateful, streamed, lab = {}, {}, {}
    for batch in BATCH_SIZES:
        temperatures = jnp.ones(batch)
        keys = jax.random.split(jax.random.key(0), batch)
        run = functools.partial(sampling.generate_ids, graphdef, params, prompt, temperatures, keys, length)
        run()
        stateful[f"batch_{batch}"] = batch * length / fastest(run, repeats)
        if batch == 1:  # Streaming: the same sample read STREAM_CHUNK characters at a time.
            stream = functools.partial(read_stream, graphdef, params, prompt, temperatures, keys, length)
            stream()
            streamed[f"batch_{batch}"] = length / fastest(stream, repeats)
        windows = np.broadcast_to(np.asarray(prompt), (batch, seq_length))
        lab_generate(graphdef, params, windows, 1, vocab_size)
        run = functools.partial(lab_generate, graphdef, params, windows, lab_length, vocab_size)
        lab[f"batch_{batch}"] = batch * lab_length / fastest(run, repeats)
    weight_bytes = step_weight_bytes(params)
    memory_bound = read_bytes_per_second(weight_bytes, repeats) / weight_bytes
    return {
        "generate_chars_per_second": stateful,
        "generate_step_weight_bytes": weight_bytes,
        "generate_memory_bound_chars_per_second": memory_bound,
        "generate_share_of_memory_bound": stateful["batch_1"] / memory_bound,
        "generate_streamed_chars_per_second": streamed,
        "generate_chars_per_second_lab_method": lab,
        "generate_speedup": {name: stateful[name] / lab[name] for name in stateful},
    }

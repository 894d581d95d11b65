"""What the model's thread runs: generate requests as the rows of one sampler call, texts scored, and the
warm-up that compiles every shape those use.

A batch primes each request's prompt once (in power-of-two pieces, so a new
prompt length compiles nothing after the warm-up), repeats that state for the
request's samples, and pads the rows to a power of two; the random numbers are
drawn for the server's longest sample. So the compiled shapes are one per row
count and sampling filter, whatever the prompts and lengths. Row r of a
request draws from fold_in(key(seed), r), as charlstm.generation does.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np

from charlstm import generation, sampling
from charlstm.protocols import stream
from charlstm.serve.requests import Generate, Limits

# Steps per chunk of every batch: text reaches the page every STEPS characters.
STEPS = sampling.STREAM_CHUNK
# Characters per compiled call when scoring; a text is padded to a multiple of it (one compiled shape).
SCORE_CHUNK = 256

Send = Callable[[str, dict], None]  # (event, data): 'piece' as text grows, then 'done' or 'error'.


@dataclasses.dataclass(frozen=True)
class GenerateJob:
    request: Generate
    prompt_ids: np.ndarray
    send: Send


@dataclasses.dataclass(frozen=True)
class ScoreJob:
    ids: np.ndarray
    send: Send


def padded_rows(rows: int) -> int:
    """The power of two at or above `rows`: a batch of `rows` rows runs at that many."""
    return 1 << (rows - 1).bit_length()


def uniform_length(limits: Limits) -> int:
    """Random numbers drawn per row at once: the longest sample rounded up to whole chunks, for every batch
    (at most sampling.UNIFORM_BLOCK, which STEPS divides: longer samples draw block by block)."""
    return min(math.ceil(limits.max_length / STEPS) * STEPS, sampling.UNIFORM_BLOCK)


def run_batch(model: generation.Model, jobs: list[GenerateJob], limits: Limits) -> None:
    """Samples every job's rows in one sampler call, sending each job a 'piece' event per chunk (the new text
    and its surprisal per sample) and 'done' with its samples once its length is reached."""
    sizes = [job.request.num_samples for job in jobs]
    rows = padded_rows(sum(sizes))
    carry = _primed(model, jobs, rows)
    temperatures, keys, top_k, top_p = _row_settings(jobs, rows)
    length = max(job.request.length for job in jobs)
    outputs = [generation.Rows(model.vocab, size, "", keep_surprisal=True) for size in sizes]
    chunks = sampling.continue_chunks(
        model.run.graphdef, model.run.params, carry, keys, temperatures, top_k, top_p, length, STEPS,
        uniform_length(limits),
    )
    for at, chunk in zip(range(0, length, STEPS), chunks):
        first = 0
        for job, size, out in zip(jobs, sizes, outputs):
            if at < job.request.length:
                steps = job.request.length - at
                _hand_out(job, out, _rows_of(chunk, first, size, steps), last=steps <= STEPS)
            first += size


def _hand_out(job: GenerateJob, out: generation.Rows, chunk: sampling.Chunk, last: bool) -> None:
    """Adds a job's part of a chunk to its rows and sends the new text; 'done' after the `last` part."""
    pieces = out.add(chunk)
    surprisal = [rounded(out.surprisal(r)[out.lengths[r] - len(p) :]) for r, p in enumerate(pieces)]
    job.send("piece", {"texts": pieces, "surprisal": surprisal})
    if last:
        job.send("done", {"samples": [_sample(job.request, out, r) for r in range(len(pieces))]})


def _sample(request: Generate, out: generation.Rows, r: int) -> dict:
    sample = generation.Sample(request.prompt, request.temperature, request.seed, r, out.text(r), *out.bpc(r))
    return {**sample.record(), "surprisal": rounded(out.surprisal(r))}


def rounded(bits: np.ndarray) -> list[float]:
    """Bits to 3 decimals, as JSON numbers (from float64, so they print short)."""
    return np.round(np.asarray(bits, np.float64), 3).tolist()


def _rows_of(chunk: sampling.Chunk, first: int, size: int, steps: int) -> sampling.Chunk:
    """Rows first..first+size of `chunk`, its first `steps` steps."""
    return sampling.Chunk(*(x[first : first + size, :steps] for x in dataclasses.astuple(chunk)))


def _primed(model: generation.Model, jobs: list[GenerateJob], rows: int):
    """The sampler's carry (logits and state, each `[rows, ...]`, on the device as the sampler's own carry is,
    so one compiled program serves every chunk): each job's prompt primed once at one row, repeated for its
    samples; zeros below."""
    parts = []
    for job in jobs:
        carry = sampling.prime(model.run.graphdef, model.run.params, job.prompt_ids, 1, in_pieces=True)
        parts.append(jax.tree.map(lambda x, n=job.request.num_samples: np.repeat(np.asarray(x), n, axis=0), carry))
    device = jax.tree.leaves(model.run.params)[0].sharding  # Placed as the sampler's outputs are: committed.
    return jax.tree.map(lambda *xs: jax.device_put(_padded(np.concatenate(xs), rows), device), *parts)


def _row_settings(jobs: list[GenerateJob], rows: int) -> tuple[np.ndarray, jax.Array, np.ndarray, np.ndarray]:
    """Per row: temperature `[rows]`, key `[rows]`, top_k and top_p `[rows, 1]`; padding rows are greedy."""
    temperatures, keys, top_k, top_p = [], [], [], []
    for job in jobs:
        r = job.request
        temperatures += [r.temperature] * r.num_samples
        keys.append(np.asarray(jax.random.key_data(sampling.sample_rows((r.temperature,), r.num_samples, r.seed)[1])))
        top_k += [r.top_k] * r.num_samples
        top_p += [r.top_p] * r.num_samples
    return (
        _padded(np.asarray(temperatures, np.float32), rows),
        jax.random.wrap_key_data(_padded(np.concatenate(keys), rows)),
        _padded(np.asarray(top_k, np.int32)[:, None], rows),
        _padded(np.asarray(top_p, np.float32)[:, None], rows, fill=1.0),
    )


def _padded(x: np.ndarray, rows: int, fill: float = 0) -> np.ndarray:
    """`x` with rows of `fill` added below, to `rows` rows."""
    return np.concatenate([x, np.full((rows - len(x), *x.shape[1:]), fill, x.dtype)])


def score(model: generation.Model, ids: np.ndarray) -> np.ndarray:
    """The surprisal in bits `[len(ids) - 1]` of each id after the first, one state carried from the first
    (the stream protocol); the ids are padded to whole SCORE_CHUNKs, so any length runs one compiled shape."""
    padded = np.zeros(math.ceil((len(ids) - 1) / SCORE_CHUNK) * SCORE_CHUNK + 1, np.int32)
    padded[: len(ids)] = ids
    nll = stream.stream_nll(model.run.graphdef, model.run.params, padded, 1, SCORE_CHUNK)
    return nll[: len(ids) - 1] / math.log(2)


def warm_up(model: generation.Model, limits: Limits) -> None:
    """Compiles everything a request within `limits` runs: prompt pieces up to --max_prompt, a batch at each
    row count up to batch_requests x max_samples, with and without top-k/top-p, and scoring."""
    for bits in range(1, limits.max_prompt.bit_length() + 1):  # Each piece first (from zeros), and after others.
        sampling.prime(model.run.graphdef, model.run.params, np.zeros(2**bits - 1, np.int32), 1, in_pieces=True)
    for num_samples in range(1, limits.max_samples + 1):
        sampling.sample_rows((1.0,), num_samples, 0)
    most = padded_rows(limits.batch_requests * limits.max_samples)
    for rows in (1 << b for b in range(most.bit_length())):
        for top_k in (0, 1):
            sizes = [min(limits.max_samples, rows - at) for at in range(0, rows, limits.max_samples)]
            requests = [Generate("-", 1, 1.0, top_k, 1.0, 0, size) for size in sizes]
            run_batch(model, [GenerateJob(r, np.zeros(1, np.int32), lambda *_: None) for r in requests], limits)
    score(model, np.zeros(SCORE_CHUNK + 2, np.int32))  # Two chunks: the first from zeros, then one after it.

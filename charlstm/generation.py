"""A trained run as notebooks, scripts and the interactive session use it: generate, stream, beam, score.

    import charlstm
    run = charlstm.load("runs/obama")
    run.generate("the state of our union is", length=200, temperature=0.5)[0].text
    for piece in run.stream("tonight", length=500):
        print(piece, end="")
    run.score("we the people").bpc

Every sample comes with its bits per character under the model (temperature
1: how likely the model finds it) and under the distribution it was drawn
from; both are sums of the sampler's per-step log-softmax (charlstm.sampling).
"""

import dataclasses
import inspect
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from charlstm import beam, data, evaluate, protocols, sampling, trained_run
from charlstm.errors import CharLSTMError
from charlstm.protocols.base import Scoring


@dataclasses.dataclass(frozen=True)
class Sample:
    """One continuation of a prompt, and how likely it is (bits per character of `text`)."""

    prompt: str
    temperature: float | None  # None: found by beam search.
    seed: int
    sample: int  # Draws from fold_in(key(seed), sample); the beam's rank for beam search.
    text: str
    bpc: float  # Under the model's own distribution (temperature 1).
    bpc_at_temperature: float | None  # Under the distribution it was drawn from; 0 for greedy, None for beam.

    def record(self) -> dict:
        """The sample as one JSON object (generate.py's jsonl output)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Score:
    """The surprisal of each scored character of `text`, and how they were scored."""

    text: str
    first: int  # Characters before the first scored one (context only).
    surprisal: np.ndarray  # Bits `[len(text) - first]`.
    how: str

    @property
    def bpc(self) -> float:
        return float(np.mean(self.surprisal, dtype=np.float64))


def describe_bpc(sample: Sample) -> str:
    """One line for a person: how likely the sample is under the model and under what it was drawn from."""
    line = f"{sample.bpc:.3f} bits per character under the model"
    if sample.bpc_at_temperature is not None:
        line += f", {sample.bpc_at_temperature:.3f} under temperature {sample.temperature:g}"
    return line + f" ({len(sample.text)} characters)"


def parse_temperatures(values: list[str], flag: str) -> tuple[float, ...]:
    """Temperatures given as text (a --`flag` list), each a number >= 0."""
    try:
        numbers = tuple(float(v) for v in values)
    except ValueError:
        raise CharLSTMError(f"--{flag}={','.join(values)}: give numbers >= 0, e.g. --{flag}=0.2,0.5,1.0") from None
    if not numbers or any(not 0 <= t < math.inf for t in numbers):
        raise CharLSTMError(f"--{flag}={','.join(values)}: each temperature must be a number >= 0 (0 = greedy)")
    return numbers


def read_prompt(source: str) -> str:
    """The text of the prompt file `source` ('-': stdin), refused when missing, unreadable, binary or empty."""
    what = "stdin" if source == "-" else f"the prompt file {source!r}"
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise CharLSTMError(f"cannot read {what}: {e.strerror}: give the path of a readable text file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise CharLSTMError(f"{what} is not UTF-8 text (binary?): give a text file")
    if not text.strip():
        raise CharLSTMError(f"{what} is empty: give a prompt with some text")
    return text


def bits_per_char(log_prob: float, length: int) -> float:
    """Bits per character of a text of `length` characters whose log-probability is `log_prob` nats."""
    return (0.0 - log_prob) / math.log(2) / length if length else math.nan  # 0.0 - : no -0.0.


class Rows:
    """The samples of one batched call as its chunks arrive: text and log-probabilities per row, each row
    closed after its stop string. Log-probabilities are summed one by one in float64, so the sums do not
    depend on how the steps were chunked."""

    def __init__(self, vocab: data.Vocab, rows: int, stop: str, keep_surprisal: bool = False):
        self.vocab, self.stop = vocab, stop
        self.model_log_probs = [[] for _ in range(rows)] if keep_surprisal else None  # Per row, per chunk.
        self.pieces: list[list[str]] = [[] for _ in range(rows)]
        self.lengths, self.open, self.tails = [0] * rows, [True] * rows, [""] * rows
        self.log_probs = np.zeros((rows, 2))  # Per row: the sums under the model and under the sampling.

    def add(self, chunk: sampling.Chunk) -> list[str]:
        """Takes a chunk; returns each row's new text (empty for a row already closed)."""
        new = []
        for r, ids in enumerate(chunk.ids):
            piece = self.vocab.decode(ids) if self.open[r] else ""
            if self.stop and piece:
                tail = self.tails[r]  # The last len(stop) - 1 characters: a stop string may straddle chunks.
                if (end := (tail + piece).find(self.stop)) >= 0:
                    piece, self.open[r] = piece[: end + len(self.stop) - len(tail)], False
                self.tails[r] = (tail + piece)[len(tail + piece) - len(self.stop) + 1 :]
            self.pieces[r].append(piece)
            self.lengths[r] += len(piece)
            if self.model_log_probs is not None:
                self.model_log_probs[r].append(chunk.model_log_probs[r, : len(piece)])
            for column, log_probs in enumerate((chunk.model_log_probs, chunk.sampling_log_probs)):
                values = np.concatenate([[self.log_probs[r, column]], log_probs[r, : len(piece)]])
                self.log_probs[r, column] = np.add.accumulate(values, dtype=np.float64)[-1]
            new.append(piece)
        return new

    @property
    def done(self) -> bool:
        return not any(self.open)

    def text(self, r: int) -> str:
        return "".join(self.pieces[r])

    def bpc(self, r: int) -> tuple[float, float]:
        """Row r's bits per character under the model and under its sampling distribution."""
        return tuple(bits_per_char(float(total), self.lengths[r]) for total in self.log_probs[r])

    def surprisal(self, r: int) -> np.ndarray:
        """Row r's surprisal under the model, in bits `[len(text(r))]`: how unexpected each of its characters
        was (what the server shades them by); Rows made with keep_surprisal only."""
        return -np.concatenate(self.model_log_probs[r], dtype=np.float64) / math.log(2)


class Model:
    """A run's model at one checkpoint, with text in and text out (`charlstm.load` makes one)."""

    def __init__(self, run: trained_run.Run, prime_in_pieces: bool = False):
        self.run, self.prime_in_pieces = run, prime_in_pieces  # See sampling.prime.
        self.config, self.vocab, self.step = run.config, run.vocab, run.step

    def encode(self, text: str, what: str) -> np.ndarray:
        """Ids of `text` cleaned as the training text was (trained_run.Run.encode); warnings on stderr for
        what was dropped, naming the text as `what`."""
        ids, warnings = self.run.encode(text, what)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return ids

    def prompt_ids(self, prompt: str) -> np.ndarray:
        """Ids of `prompt` (encode), refused when the cleaning leaves nothing."""
        ids = self.encode(prompt, "prompt")
        if not len(ids):
            raise CharLSTMError("the prompt has no characters left after cleaning: give another")
        return ids

    def random_prompt(self, seed: int) -> str:
        """A window of data.seq_length characters of the validation text, picked by `seed`."""
        ids = self.run.corpus().val_ids
        return self.vocab.decode(data.random_window(ids, self.config.data.seq_length, np.random.default_rng(seed)))

    def _settings(self, length, top_k, top_p, stop) -> tuple[int, int, float, str]:
        s = self.config.sample
        length, top_k, top_p = s.length if length is None else length, s.top_k if top_k is None else top_k, (
            s.top_p if top_p is None else top_p)
        if length < 1 or top_k < 0 or not 0 < top_p <= 1:
            raise CharLSTMError(f"length={length}, top_k={top_k}, top_p={top_p}: need length >= 1, top_k >= 0 "
                                "(0 = all) and 0 < top_p <= 1")
        return length, top_k, top_p, s.stop if stop is None else stop

    def _chunks(self, prompt_ids, temperatures, keys, length, top_k, top_p, stream) -> Iterator[sampling.Chunk]:
        if any(t < 0 or not math.isfinite(t) for t in temperatures):
            raise CharLSTMError(f"temperatures {temperatures}: each must be a number >= 0 (0 = greedy)")
        return sampling.sample_chunks(
            self.run.graphdef, self.run.params, prompt_ids, jnp.asarray(temperatures, jnp.float32), keys,
            length, top_k, top_p, stream, self.prime_in_pieces,
        )

    def generate(
        self,
        prompt: str,
        length: int | None = None,
        temperature: float | Sequence[float] = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        num_samples: int = 1,
        stop: str | None = None,
    ) -> list[Sample]:
        """`num_samples` continuations of `prompt` at each temperature, in one batched call (temperature
        0: greedy). Unset settings come from the run's config.sample; sample s draws from
        fold_in(key(seed), s) at every temperature."""
        temperatures, keys = sampling.sample_rows(tuple(np.atleast_1d(temperature).tolist()), num_samples, seed)
        length, top_k, top_p, stop = self._settings(length, top_k, top_p, stop)
        rows = Rows(self.vocab, len(temperatures), stop)
        for chunk in self._chunks(self.prompt_ids(prompt), temperatures, keys, length, top_k, top_p, False):
            rows.add(chunk)
        return [
            Sample(prompt, t, seed, r % num_samples, rows.text(r), *rows.bpc(r)) for r, t in enumerate(temperatures)
        ]

    def stream(self, prompt: str, **settings) -> Iterator[str]:
        """generate()'s text of one sample as it is made (stream_rows' `settings`), in pieces of at most
        sampling.STREAM_CHUNK characters."""
        for _, piece in self.stream_rows(prompt, **settings):
            yield piece

    def stream_sample(self, write: Callable[[str], None], prompt: str, **settings) -> Sample:
        """Streams a sample (stream_rows' `settings`) into `write` piece by piece; returns it with its bpc."""
        streamed = None
        for streamed in self.stream_rows(prompt, **settings):
            write(streamed[1])
        called = inspect.signature(self.stream_rows).bind(prompt, **settings)
        called.apply_defaults()  # The settings stream_rows drew with, its defaults included.
        s, rows = called.arguments, streamed[0]
        return Sample(prompt, s["temperature"], s["seed"], s["sample"], rows.text(0), *rows.bpc(0))

    def stream_rows(
        self,
        prompt: str,
        length: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        sample: int = 0,
        stop: str | None = None,
    ) -> Iterator[tuple[Rows, str]]:
        """generate()'s sample number `sample` at `temperature` as it is made: each new piece of text (at
        most sampling.STREAM_CHUNK characters) with the Rows it went into (their `bpc` when it ends)."""
        length, top_k, top_p, stop = self._settings(length, top_k, top_p, stop)
        _, keys = sampling.sample_rows((temperature,), sample + 1, seed)
        rows = Rows(self.vocab, 1, stop)
        for chunk in self._chunks(self.prompt_ids(prompt), [temperature], keys[sample:], length, top_k, top_p, True):
            (piece,) = rows.add(chunk)
            if piece:
                yield rows, piece
            if rows.done:
                return

    def beam(self, prompt: str, width: int, length: int | None = None) -> list[Sample]:
        """The `width` most likely continuations of `prompt` of `length` characters, by beam search."""
        length = self._settings(length, None, None, None)[0]
        found = beam.beam_search(self.run.graphdef, self.run.params, self.prompt_ids(prompt), width, length)
        return [
            Sample(prompt, None, 0, rank, self.vocab.decode(ids), bits_per_char(float(log_prob), length), None)
            for rank, (ids, log_prob) in enumerate(zip(np.asarray(found.ids), np.asarray(found.log_probs)))
        ]

    def score(self, text: str, protocol: str | None = None) -> Score:
        """The surprisal of `text`'s characters. Under `protocol` (default: the run's eval.protocol) after
        the first data.seq_length as context; a shorter text is scored from its second character on, one
        state carried from its first (the `stream` protocol)."""
        ids = self.encode(text, "text")
        if len(ids) < 2:
            raise CharLSTMError("the text to score has fewer than 2 characters after cleaning: give a longer one")
        seq_length, protocol = self.config.data.seq_length, protocol or self.config.eval.protocol
        if len(ids) <= seq_length:
            scoring, how = dataclasses.replace(Scoring.from_config(self.config, "stream"), first=1), (
                f"stream from the first character: the text is not longer than data.seq_length={seq_length}")
        else:
            reads_training_text = protocol in protocols.PROTOCOLS and protocols.PROTOCOLS[protocol].reads_training_text
            train_ids = self.run.corpus().train_ids if reads_training_text else None
            scoring = Scoring.from_config(self.config, protocol, train_ids)
            how = f"{protocol}: the first {seq_length} characters are context only"
        nll = evaluate.per_char_nll(self.run.graphdef, self.run.params, ids, scoring)
        return Score(self.vocab.decode(ids), scoring.first, nll / math.log(2), how)


default_config = trained_run.default_config  # What the scripts' --config.* overrides are typed by.


def load(
    workdir: str | Path, checkpoint: str = "best", overrides: dict | None = None, prime_in_pieces: bool = False
) -> Model:
    """The run in `workdir` at `checkpoint` ('best', 'latest' or a step number), `overrides` of its config
    ({'sample.top_k': 5}) on top; `prime_in_pieces`: see sampling.prime."""
    return Model(trained_run.load(workdir, checkpoint, overrides), prime_in_pieces)

"""Text to character ids: reading, cleaning, the vocabulary, the split and batches.

The corpus stays one int32 array; windows are sliced from it per batch, never
materialised as one-hot tensors.
"""

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from charlstm import corpora
from charlstm.errors import CharLSTMError


# A text may have a few bad bytes (decoded as U+FFFD); more than this share means it is not text.
MAX_UNDECODABLE_SHARE = 0.01


@dataclasses.dataclass(frozen=True)
class RawText:
    """A decoded text file and what decoding it took."""

    text: str
    sha256: str  # Of the file's bytes, to recognise the same corpus later.
    n_bytes: int
    replaced: int  # Undecodable bytes replaced by U+FFFD.


def read_text(path: str | Path) -> RawText:
    """Reads a text file as UTF-8: CRLF and CR become LF, a BOM is dropped, bad bytes become U+FFFD.

    Refuses files that are not text: any NUL byte, or more than
    MAX_UNDECODABLE_SHARE undecodable bytes.
    """
    path = Path(path)
    if not path.exists():
        raise CharLSTMError(f"corpus file {str(path)!r} does not exist: check data.path")
    if path.is_dir():
        raise CharLSTMError(f"corpus path {str(path)!r} is a directory: give a text file")
    raw = path.read_bytes()
    if not raw:
        raise CharLSTMError(f"corpus file {str(path)!r} is empty: give a text file with content")
    if b"\x00" in raw:
        raise CharLSTMError(f"{str(path)!r} contains NUL bytes, so it is not text: give a UTF-8 text file")
    digest, n_bytes = hashlib.sha256(raw).hexdigest(), len(raw)
    text = raw.decode("utf-8", errors="replace")
    del raw  # Large corpora: hold as few copies as possible.
    replaced = text.count("\ufffd")
    if replaced > MAX_UNDECODABLE_SHARE * n_bytes:
        raise CharLSTMError(
            f"{str(path)!r} has {replaced} undecodable bytes of {n_bytes}, so it is not UTF-8 "
            "text: convert it to UTF-8 (e.g. iconv -t utf-8)"
        )
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return RawText(text, digest, n_bytes, replaced)


def clean_text(text: str, keep_chars: str, lowercase: bool) -> str:
    """The lab's cleaning: drop characters outside the class `[keep_chars]`, then lowercase."""
    if keep_chars:
        text = re.sub(f"[^{keep_chars}]+", "", text)
    return text.lower() if lowercase else text


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Sorted unique characters; a character's id is its index."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def missing(self, text: str) -> str:
        """The characters of `text` that have no id, sorted and unique."""
        return "".join(sorted(set(text) - set(self.chars)))

    def encode(self, text: str) -> np.ndarray:
        """Ids `[len(text)]` as int32; raises CharLSTMError on unknown characters."""
        if unknown := self.missing(text):
            raise CharLSTMError(
                f"characters {unknown!r} are not in the vocabulary: remove them from the text"
            )
        table = np.full(max(map(ord, self.chars)) + 1, -1, np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(self.size, dtype=np.int32)
        if text.isascii():  # One byte per character instead of four for large corpora.
            return table[np.frombuffer(text.encode("ascii"), np.uint8)]
        return table[np.frombuffer(text.encode("utf-32-le"), np.uint32)]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).tolist())

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars})

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        return cls(json.loads(text)["chars"])


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A cleaned corpus with its vocabulary and the contiguous train/val split."""

    vocab: Vocab
    train_ids: np.ndarray  # [n_train] int32
    val_ids: np.ndarray  # [n_val] int32
    source: str  # The file read.
    sha256: str
    n_bytes: int
    replaced: int  # Undecodable bytes replaced by U+FFFD before cleaning.


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train is the head, validation the contiguous tail of `val_fraction` of the ids."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def corpus_path(data: ml_collections.ConfigDict) -> Path:
    """The text file a run reads: `data.path` if given, else the built-in corpus."""
    if data.path:
        return Path(data.path)
    return corpora.builtin_corpus_path(data.corpus, data.dir)


def load_corpus(data: ml_collections.ConfigDict) -> Corpus:
    """Reads, cleans, encodes and splits the corpus that `data` names."""
    path = corpus_path(data)
    raw = read_text(path)
    text = clean_text(raw.text, data.keep_chars, data.lowercase)
    if data.max_chars:
        text = text[: data.max_chars]
    vocab = Vocab.from_text(text)
    train_ids, val_ids = split_ids(vocab.encode(text), data.val_fraction)
    shortest = min(len(train_ids), len(val_ids))
    if shortest < data.seq_length + 1:
        raise CharLSTMError(
            f"{str(path)!r} gives {len(train_ids)} training and {len(val_ids)} validation "
            f"characters after cleaning; each needs at least seq_length+1="
            f"{data.seq_length + 1}: use a longer text or a smaller data.seq_length"
        )
    return Corpus(vocab, train_ids, val_ids, str(path), raw.sha256, raw.n_bytes, raw.replaced)


def epoch_window_starts(
    n_chars: int, seq_length: int, batch_size: int, objective: str, rng: np.random.Generator
) -> np.ndarray:
    """Shuffled window starts `[steps, batch]` for one epoch over `n_chars` ids.

    'all': back-to-back windows of seq_length+1 ids (inputs and shifted targets)
    from a random offset, so one epoch is one pass over the characters.
    'last': every stride-1 window, as in the lab (one target per window).
    A remainder smaller than a batch is dropped so every step has one shape.
    """
    if objective == "all":
        offset = int(rng.integers(seq_length))
        starts = np.arange(offset, n_chars - seq_length, seq_length)
    else:
        starts = np.arange(n_chars - seq_length)
    starts = rng.permutation(starts).astype(np.int32)
    steps = len(starts) // batch_size
    if steps == 0:
        raise CharLSTMError(
            f"{len(starts)} training windows are fewer than train.batch_size="
            f"{batch_size}: use a smaller train.batch_size or a longer text"
        )
    return starts[: steps * batch_size].reshape(steps, batch_size)


def stream_window_starts(n_chars: int, seq_length: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Window starts `[steps, batch]` for stateful training: column b walks stream b in order.

    The text (from a random offset) is cut into `batch_size` contiguous streams;
    step k takes the k-th window of every stream, so the state a window ends
    with is the right start for the next window of the same column.
    """
    offset = int(rng.integers(seq_length))
    stream_length = (n_chars - 1 - offset) // batch_size
    steps = (stream_length - 1) // seq_length
    if steps == 0:
        raise CharLSTMError(
            f"streams of {stream_length} characters are shorter than seq_length+1: "
            "use a smaller train.batch_size or a longer text"
        )
    streams = offset + stream_length * np.arange(batch_size)
    return (streams[None, :] + seq_length * np.arange(steps)[:, None]).astype(np.int32)


def steps_per_epoch(n_chars: int, seq_length: int, batch_size: int, objective: str) -> int:
    """Steps in an epoch of `epoch_window_starts` at offset 0, the most an epoch has."""
    windows = (n_chars - 1) // seq_length if objective == "all" else n_chars - seq_length
    return windows // batch_size


def gather_windows(ids: jnp.ndarray, starts: jnp.ndarray, length: int) -> jnp.ndarray:
    """Windows `[batch, length]` of `ids` beginning at `starts` `[batch]`; jit-friendly."""
    return ids[starts[:, None] + jnp.arange(length)]

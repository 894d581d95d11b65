"""Text to character ids: reading, cleaning, the vocabulary, the split and batches.

The corpus stays one array of ids, one byte per character for vocabularies of
up to 256; windows are sliced from it per batch, never materialised as one-hot
tensors. A corpus is read, cleaned and encoded in pieces of CHUNK_BYTES, so
one of hundreds of MB needs little more memory than its ids.
"""

import codecs
import collections
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from charlstm import corpora
from charlstm.errors import CharLSTMError

# A text may have a few bad bytes (decoded as U+FFFD); more than this share means it is not text.
MAX_UNDECODABLE_SHARE = 0.01
# Cleaning that removes more than this share of a text's characters is warned about.
MAX_QUIET_REMOVAL = 0.25
# Bytes read and decoded at a time: bounds the memory reading a corpus takes, whatever its size.
CHUNK_BYTES = 1 << 24


@dataclasses.dataclass(frozen=True)
class RawText:
    """A decoded text file and what decoding it took."""

    text: str
    sha256: str  # Of the file's bytes, to recognise the same corpus later.
    n_bytes: int
    replaced: int  # Undecodable bytes replaced by U+FFFD.


class TextFile:
    """A text file read in pieces as UTF-8: CRLF and CR become LF, a BOM is dropped, bad bytes become U+FFFD.

    Refuses files that are not text: any NUL byte, or more than
    MAX_UNDECODABLE_SHARE undecodable bytes. After a full pass of `pieces()`,
    `sha256`, `n_bytes` and `replaced` describe the whole file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CharLSTMError(f"corpus file {str(self.path)!r} does not exist: check data.path")
        if self.path.is_dir():
            raise CharLSTMError(f"corpus path {str(self.path)!r} is a directory: give a text file")
        if not self.path.stat().st_size:
            raise CharLSTMError(f"corpus file {str(self.path)!r} is empty: give a text file with content")
        self.sha256, self.n_bytes, self.replaced = "", 0, 0

    def pieces(self) -> Iterator[str]:
        """The decoded, normalised text in pieces that end at line breaks, so no CRLF is split and
        lowercasing (which reads a final sigma in context) sees whole lines; only a line longer than
        CHUNK_BYTES characters is cut."""
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")  # -sig: drops a BOM.
        digest, self.n_bytes, self.replaced, pending = hashlib.sha256(), 0, 0, ""
        with open(self.path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                if b"\x00" in block:
                    raise CharLSTMError(
                        f"{str(self.path)!r} contains NUL bytes, so it is not text: give a UTF-8 text file"
                    )
                digest.update(block)
                self.n_bytes += len(block)
                text = pending + decoder.decode(block)
                cut = text.rfind("\n") + 1  # After the last line break.
                if not cut and len(text) >= CHUNK_BYTES:  # A line longer than a block: all but a final CR.
                    cut = len(text) - text.endswith("\r")
                text, pending = text[:cut], text[cut:]
                yield self._normalise(text)
        yield self._normalise(pending + decoder.decode(b"", final=True))
        self.sha256 = digest.hexdigest()
        if self.replaced > MAX_UNDECODABLE_SHARE * self.n_bytes:
            raise CharLSTMError(
                f"{str(self.path)!r} has {self.replaced} undecodable bytes of {self.n_bytes}, so it is not UTF-8 "
                "text: convert it to UTF-8 (e.g. iconv -t utf-8)"
            )

    def _normalise(self, text: str) -> str:
        self.replaced += text.count("\ufffd")
        return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: str | Path) -> RawText:
    """The whole of a text file, read as TextFile reads it."""
    file = TextFile(path)
    text = "".join(file.pieces())
    return RawText(text, file.sha256, file.n_bytes, file.replaced)


def clean_text(text: str, keep_chars: str, lowercase: bool) -> str:
    """The lab's cleaning: drop characters outside the class `[keep_chars]`, then lowercase."""
    if keep_chars:
        text = re.sub(f"[^{keep_chars}]+", "", text)
    return text.lower() if lowercase else text


@dataclasses.dataclass
class Removal:
    """What the lab's cleaning removed from a text: how often each character, out of `n_chars`."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    n_chars: int = 0

    def add(self, text: str, keep_chars: str) -> None:
        """Counts what cleaning `text` with `keep_chars` removes."""
        self.counts.update(re.sub(f"[{keep_chars}]+", "", text) if keep_chars else "")
        self.n_chars += len(text)


def check_cleaning(removal: Removal, kept: Iterable[str], what: str) -> str | None:
    """A warning when cleaning removed more than MAX_QUIET_REMOVAL of the characters of `what`,
    else None; CharLSTMError when the characters `kept` have no letter or digit."""
    fix = 'keep them with --config.data.keep_chars="" (keeps every character) or a class that includes them'
    common = "".join(c for c, _ in removal.counts.most_common(10))
    if not any(c.isalnum() for c in kept):
        raise CharLSTMError(
            f"{what} has no letter or digit left after cleaning, which removed {common!r} and more: {fix}"
        )
    share = sum(removal.counts.values()) / max(removal.n_chars, 1)
    if share <= MAX_QUIET_REMOVAL:
        return None
    return f"cleaning removed {share:.0%} of the characters of {what}, most often {common!r}: {fix}"


def code_points(text: str) -> np.ndarray:
    """The code point of each character `[len(text)]`: one byte each for ASCII text, else four."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Sorted unique characters; a character's id is its index."""

    chars: str

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        """The smallest unsigned type that holds every id: uint8 up to 256 characters."""
        return np.min_scalar_type(max(self.size - 1, 0))

    def missing(self, text: str) -> str:
        """The characters of `text` that have no id, sorted and unique."""
        return "".join(sorted(set(text) - set(self.chars)))

    def encode(self, text: str) -> np.ndarray:
        """Ids `[len(text)]` as int32; raises CharLSTMError on unknown characters."""
        codes = code_points(text)
        table = np.full(max(max(map(ord, self.chars)), codes.max(initial=0)) + 1, -1, np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(self.size, dtype=np.int32)
        ids = table[codes]
        if (ids < 0).any():
            raise CharLSTMError(
                f"characters {self.missing(text)!r} are not in the vocabulary: remove them from the text"
            )
        return ids

    def decode(self, ids) -> str:
        """The text of ids `[n]`, through a table of code points: no Python object per character."""
        ids = np.asarray(ids)
        ids = ids if ids.dtype.kind in "iu" else ids.astype(np.int64)  # [] arrives as float64.
        codes = code_points(self.chars)[ids]
        return codes.tobytes().decode("ascii" if codes.dtype == np.uint8 else "utf-32-le")

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars})

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        return cls(json.loads(text)["chars"])


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A cleaned corpus with its vocabulary and the contiguous train/val/test split (the vocabulary
    is the whole file's)."""

    vocab: Vocab
    train_ids: np.ndarray  # [n_train] of vocab.id_dtype
    val_ids: np.ndarray  # [n_val] of vocab.id_dtype
    test_ids: np.ndarray  # [n_test] of vocab.id_dtype; empty without data.test_fraction.
    source: str  # The file read.
    sha256: str
    n_bytes: int
    replaced: int  # Undecodable bytes replaced by U+FFFD before cleaning.

    def held_out(self) -> dict[str, np.ndarray]:
        """The splits training never trains on, by name: 'val', and 'test' when there is one."""
        return {"val": self.val_ids, "test": self.test_ids} if len(self.test_ids) else {"val": self.val_ids}


def split_ids(ids: np.ndarray, val_fraction: float, test_fraction: float = 0.0) -> tuple[np.ndarray, ...]:
    """(train, validation, test): test is the contiguous tail of `test_fraction` of the ids, validation
    the `val_fraction` before it, train the head; test_fraction 0 leaves validation the tail."""
    n_test = round(len(ids) * test_fraction)
    n_val = round(len(ids) * val_fraction)
    val_end = len(ids) - n_test
    return ids[: val_end - n_val], ids[val_end - n_val : val_end], ids[val_end:]


def corpus_path(data: ml_collections.ConfigDict) -> Path:
    """The text file a run reads: `data.path` if given, else the built-in corpus."""
    if data.path:
        return Path(data.path)
    return corpora.builtin_corpus_path(data)


def cleaned_pieces(file: TextFile, data: ml_collections.ConfigDict, removal: Removal | None = None) -> Iterator[str]:
    """The file's text cleaned as `data` says, in pieces, cut after data.max_chars characters (0 = all).

    Reads the whole file even past the limit, so its SHA-256 and checks cover all of it; `removal`,
    if given, counts what cleaning removes from all of it.
    """
    left = data.max_chars or None
    for piece in file.pieces():
        if removal is not None:
            removal.add(piece, data.keep_chars)
        if left == 0:
            continue
        piece = clean_text(piece, data.keep_chars, data.lowercase)[:left]
        left = None if left is None else left - len(piece)
        yield piece


def encode_file(file: TextFile, data: ml_collections.ConfigDict) -> tuple[Vocab, np.ndarray, Removal]:
    """The vocabulary and the ids `[n]` of a cleaned file, in two passes over it: the characters
    used (and what cleaning removed), then the ids, written into one array of the smallest type
    that holds them."""
    seen, n, removal = np.zeros(sys.maxunicode + 1, bool), 0, Removal()
    for piece in cleaned_pieces(file, data, removal):
        seen[code_points(piece)] = True
        n += len(piece)
    vocab = Vocab("".join(map(chr, np.flatnonzero(seen))))
    ids, at = np.empty(n, vocab.id_dtype), 0
    for piece in cleaned_pieces(file, data):
        ids[at : at + len(piece)] = vocab.encode(piece)
        at += len(piece)
    return vocab, ids, removal


def load_corpus(data: ml_collections.ConfigDict) -> Corpus:
    """Reads, cleans, encodes and splits the corpus that `data` names."""
    path = corpus_path(data)
    file = TextFile(path)
    vocab, ids, removal = encode_file(file, data)
    if warning := check_cleaning(removal, vocab.chars, repr(str(path))):
        print(f"warning: {warning}", file=sys.stderr)
    train_ids, val_ids, test_ids = split_ids(ids, data.val_fraction, data.test_fraction)
    parts = [len(train_ids), len(val_ids)] + ([len(test_ids)] if data.test_fraction else [])
    if min(parts) < data.seq_length + 1:
        names = ("training", "validation", "test")
        raise CharLSTMError(
            f"{str(path)!r} gives {', '.join(f'{n} {name}' for n, name in zip(parts, names))} "
            f"characters after cleaning; each needs at least seq_length+1={data.seq_length + 1}: "
            "use a longer text, a smaller data.seq_length or larger split fractions"
        )
    return Corpus(vocab, train_ids, val_ids, test_ids, str(path), file.sha256, file.n_bytes, file.replaced)


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


def random_window(ids: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` consecutive ids from a random start: a prompt taken from the validation text."""
    start = int(rng.integers(len(ids) - length + 1))
    return ids[start : start + length]


def targets_per_window(seq_length: int, objective: str) -> int:
    """Characters a training window is scored on: every position ('all') or the last one ('last')."""
    return seq_length if objective == "all" else 1


def steps_per_epoch(n_chars: int, seq_length: int, batch_size: int, objective: str) -> int:
    """Steps in an epoch of `epoch_window_starts` at offset 0, the most an epoch has."""
    windows = (n_chars - 1) // seq_length if objective == "all" else n_chars - seq_length
    return windows // batch_size


def gather_windows(ids: jnp.ndarray, starts: jnp.ndarray, length: int) -> jnp.ndarray:
    """Windows `[batch, length]` of `ids` beginning at `starts` `[batch]`,
    as int32 whatever the ids' storage type; jit-friendly."""
    return ids[starts[:, None] + jnp.arange(length)].astype(jnp.int32)

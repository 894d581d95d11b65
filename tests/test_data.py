import hashlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import CharLSTMError, data
from tests.conftest import run_script, vocab_of

LAB_KEEP = "\nA-Za-z0-9 ,.:;?!-"


def lab_clean(raw_text: str) -> str:
    """The lab's two lines, verbatim."""
    raw_text = re.sub("[^\nA-Za-z0-9 ,.:;?!-]+", "", raw_text)
    return raw_text.lower()


def test_cleaning_matches_the_labs_regex():
    raw = "Hello, World! — «quotes» 42% [Laughter]\n\tTab; a-b: c? é\r\n"
    assert data.clean_text(raw, LAB_KEEP, lowercase=True) == lab_clean(raw)
    assert data.clean_text(raw, "", lowercase=False) == raw


def test_vocab_is_sorted_unique_chars_and_round_trips():
    text = "the state of our union is strong.\n"
    vocab = vocab_of(text)
    assert list(vocab.chars) == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and vocab.decode(ids) == text
    assert [vocab.chars[i] for i in ids] == list(text)
    assert data.Vocab.from_json(vocab.to_json()) == vocab
    with pytest.raises(CharLSTMError, match="'x'"):
        vocab.encode("xt")


def test_last_windows_equal_the_labs_inputs_and_outputs():
    text = "abcdefghij klmnop, qrstuv. wxyz!" * 3
    vocab, seq_length = vocab_of(text), 7
    ids = vocab.encode(text)
    starts = data.epoch_window_starts(len(ids), seq_length, 1, "last", np.random.default_rng(0))
    assert sorted(starts.ravel().tolist()) == list(range(len(text) - seq_length))
    windows = np.asarray(data.gather_windows(jnp.asarray(ids), jnp.asarray(starts.ravel()), seq_length + 1))
    for start, window in zip(starts.ravel(), windows):
        assert vocab.decode(window[:-1]) == text[start : start + seq_length]
        assert vocab.decode(window[-1:]) == text[start + seq_length]


def test_all_windows_tile_the_text_without_overlap():
    n, seq_length, batch = 1000, 10, 4
    starts = data.epoch_window_starts(n, seq_length, batch, "all", np.random.default_rng(3))
    flat = np.sort(starts.ravel())
    assert np.all(np.diff(flat) % seq_length == 0) and np.all(np.diff(flat) > 0)
    assert flat[-1] + seq_length + 1 <= n
    assert starts.shape[1] == batch and starts.shape[0] == len(range(flat[0], n - seq_length, seq_length)) // batch
    assert starts.shape[0] <= data.steps_per_epoch(n, seq_length, batch, "all")
    at_zero = data.epoch_window_starts(n, 1, batch, "all", np.random.default_rng(0))  # offset 0
    assert at_zero.shape[0] == data.steps_per_epoch(n, 1, batch, "all")
    last = data.epoch_window_starts(n, seq_length, batch, "last", np.random.default_rng(0))
    assert last.shape[0] == data.steps_per_epoch(n, seq_length, batch, "last")


def test_window_order_is_shuffled_and_seeded():
    a = data.epoch_window_starts(5000, 10, 8, "all", np.random.default_rng([0, 1]))
    b = data.epoch_window_starts(5000, 10, 8, "all", np.random.default_rng([0, 1]))
    c = data.epoch_window_starts(5000, 10, 8, "all", np.random.default_rng([0, 2]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(a.ravel()), a.ravel()) and not np.array_equal(a, c)


def test_split_is_contiguous_tail_without_overlap():
    ids = np.arange(1000, dtype=np.int32)
    train, val, test = data.split_ids(ids, 0.1)
    assert len(val) == 100 and len(test) == 0
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    train, val, test = data.split_ids(ids, 0.1, 0.05)
    assert (len(train), len(val), len(test)) == (850, 100, 50)
    np.testing.assert_array_equal(np.concatenate([train, val, test]), ids)


def test_a_test_split_too_short_to_score_is_an_error(tiny_config):
    tiny_config.data.test_fraction = 0.0005  # 10 characters, fewer than seq_length + 1.
    with pytest.raises(CharLSTMError, match="10 test characters .* larger split fractions"):
        data.load_corpus(tiny_config.data)


def test_read_text_normalises_crlf_and_bom(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree")
    assert data.read_text(path).text == "one\ntwo\nthree"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.txt", "does not exist"),
    (lambda p: p, "is a directory"),
])
def test_read_text_rejects_bad_paths(tmp_path, make, message):
    with pytest.raises(CharLSTMError, match=message):
        data.read_text(make(tmp_path))


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"text\x00with a NUL byte" * 200, "NUL"), (bytes(range(128, 256)) * 100, "undecodable"),
])
def test_a_corpus_file_that_is_not_text_is_an_error(tiny_config, tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    tiny_config.data.path = str(path)
    with pytest.raises(CharLSTMError, match=message):
        data.load_corpus(tiny_config.data)


def test_corpus_shorter_than_a_window_is_an_error(tiny_config, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("far too short for a window of twenty characters")
    tiny_config.data.path = str(path)
    with pytest.raises(CharLSTMError, match="seq_length"):
        data.load_corpus(tiny_config.data)


def test_tiny_corpus_loads_with_split_and_limit(tiny_config):
    corpus = data.load_corpus(tiny_config.data)
    assert len(corpus.train_ids) + len(corpus.val_ids) == tiny_config.data.max_chars
    assert len(corpus.val_ids) == round(tiny_config.data.max_chars * tiny_config.data.val_fraction)


def test_a_few_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"caf\xe9 " + b"plain text " * 100)
    raw = data.read_text(path)
    assert raw.replaced == 1 and raw.text.startswith("caf\ufffd ")
    assert raw.n_bytes == path.stat().st_size and len(raw.sha256) == 64


def test_stream_windows_are_contiguous_across_steps():
    n, seq_length, batch = 1003, 10, 4
    starts = data.stream_window_starts(n, seq_length, batch, np.random.default_rng(5))
    np.testing.assert_array_equal(np.diff(starts, axis=0), seq_length)  # Each column walks on.
    stream_length = starts[0, 1] - starts[0, 0]
    assert np.all(np.diff(starts[0]) == stream_length)  # Columns are disjoint streams.
    assert starts[-1, -1] + seq_length + 1 <= n
    assert starts[-1, 0] + seq_length + 1 <= starts[0, 1]  # No window crosses into the next stream.


def whole_text_corpus(path, data_config) -> tuple[data.Vocab, np.ndarray]:
    """The corpus as reading the whole file at once gives it: the reference for streaming."""
    text = data.clean_text(data.read_text(path).text, data_config.keep_chars, data_config.lowercase)
    text = text[: data_config.max_chars or None]
    vocab = vocab_of(text)
    return vocab, vocab.encode(text)


@pytest.mark.parametrize("keep_chars, lowercase, max_chars", [("", False, 0), (LAB_KEEP, True, 0), ("", True, 97)])
def test_streaming_in_small_pieces_equals_reading_whole(
    tiny_config, tmp_path, monkeypatch, keep_chars, lowercase, max_chars
):
    path = tmp_path / "t.txt"
    line = "Ünïcode — ΟΔΟΣ Σ line\r\nthe CR\rfollows;\n".encode()
    long_line = b"a line longer than a block, " * 4 + b"\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + line * 40 + b"a bad byte: \xff\n" + long_line + line * 10 + b"no line break\r")
    tiny_config.data.update(
        path=str(path), keep_chars=keep_chars, lowercase=lowercase, max_chars=max_chars, seq_length=5
    )
    monkeypatch.setattr(data, "CHUNK_BYTES", 31)  # Blocks end inside CRLFs and multi-byte characters.
    corpus = data.load_corpus(tiny_config.data)
    vocab, ids = whole_text_corpus(path, tiny_config.data)
    assert corpus.vocab == vocab
    np.testing.assert_array_equal(np.concatenate([corpus.train_ids, corpus.val_ids]), ids)
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and corpus.replaced == 1
    assert corpus.train_ids.dtype == np.uint8


def test_ids_take_the_smallest_type_that_holds_the_vocabulary():
    assert data.Vocab("ab").id_dtype == np.uint8
    assert data.Vocab("".join(map(chr, range(256)))).id_dtype == np.uint8
    assert data.Vocab("".join(map(chr, range(300)))).id_dtype == np.uint16


@pytest.mark.slow
def test_memory_benchmark_trains_on_the_corpus_it_generates():
    result = run_script(
        "benchmark_memory.py", "--mb=1", "--steps=1", "--eval_chars=10", "--config", "configs/tiny.py"
    )
    assert result.returncode == 0, result.stderr
    corpus, *phases = result.stdout.strip().splitlines()
    # tiny.py's data.max_chars, split 9:1; 30 characters: the generator's 26 letters, space, comma, full stop
    # and line break, once the lab's cleaning has lowercased its capitals and removed its 'é'.
    assert corpus.startswith("1 MB corpus: 18,000 train + 2,000 validation characters, vocabulary of 30 as uint8;")
    assert [line.split()[0] for line in phases] == [
        "load_corpus", "model_and_ids", "train_steps", "evaluate", "samples_novelty", "checkpoint"
    ]


def test_a_corpus_that_cleaning_mostly_removes_is_warned_about(tiny_config, tmp_path, capsys):
    path = tmp_path / "novel.txt"
    path.write_text("Анна Каренина, часть первая. 1877.\n" * 40)
    tiny_config.data.update(path=str(path), seq_length=5)
    corpus = data.load_corpus(tiny_config.data)
    assert corpus.vocab.chars == "\n ,.178"
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: cleaning removed 66% of the characters of {str(path)!r}, most often 'а")
    assert warning.endswith('keep_chars="" (keeps every character) or a class that includes them')
    tiny_config.data.keep_chars = ""
    data.load_corpus(tiny_config.data)
    assert capsys.readouterr().err == ""


def test_a_corpus_with_no_letter_or_digit_left_is_refused(tiny_config, tmp_path):
    path = tmp_path / "symbols.txt"
    path.write_text("«—» ... ??? !!! ---\n" * 40)
    tiny_config.data.update(path=str(path), seq_length=5)
    with pytest.raises(CharLSTMError, match="no letter or digit left after cleaning, which removed '«—»'"):
        data.load_corpus(tiny_config.data)

"""The built-in corpora by name (`data.corpus`, used when data.path is empty): one file each, one line
each in CORPORA. Each is written to a text file under data.dir on first use, so runs read a plain file:

- `obama`: Barack Obama's State of the Union addresses (the default);
- `sotu`: every State of the Union address, or those of data.first_year..data.last_year.
"""

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections

from charlstm.corpora import obama, sotu
from charlstm.errors import CharLSTMError


def _in_range(data: ml_collections.ConfigDict) -> None:
    """A corpus without settings of its own has none out of range."""
    return None


@dataclasses.dataclass(frozen=True)
class BuiltinCorpus:
    """What building a corpus file and validating its settings need of a built-in corpus."""

    text: Callable[[ml_collections.ConfigDict], str]  # config.data -> the corpus's text.
    file_name: Callable[[ml_collections.ConfigDict], str]  # config.data -> its file's name under data.dir.
    fields: tuple[str, ...] = ()  # The config fields of its own settings; with other corpora they stay 0.
    problem: Callable[[ml_collections.ConfigDict], str | None] = _in_range  # Its settings out of range, or None.


CORPORA = {
    "obama": BuiltinCorpus(obama.text, obama.file_name),
    "sotu": BuiltinCorpus(sotu.text, sotu.file_name, sotu.FIELDS, sotu.problem),
}
NAMES = tuple(CORPORA)


def get(name: str) -> BuiltinCorpus:
    """The built-in corpus `name`; CharLSTMError listing the registered ones when there is none."""
    if name not in CORPORA:
        raise CharLSTMError(
            f"unknown corpus {name!r}: use one of {', '.join(map(repr, NAMES))} "
            "or give your own file with --config.data.path=FILE"
        )
    return CORPORA[name]


def builtin_corpus_path(data: ml_collections.ConfigDict) -> Path:
    """Path of the built-in corpus that `data` names under `data.dir`, (re)written unless it holds that text.

    A file that differs (cut short by a killed build, or edited) is rebuilt with a warning;
    the write is atomic, so no run ever reads half a corpus."""
    corpus = get(data.corpus)
    path = Path(data.dir) / corpus.file_name(data)
    text = corpus.text(data)
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return path
        print(
            f"warning: rebuilt {path}: it was not the text of corpus {data.corpus!r} (cut short or edited)",
            file=sys.stderr,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

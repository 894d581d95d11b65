"""Barack Obama's State of the Union addresses, 2010-2016, in date order (obama.txt)."""

import ml_collections

from charlstm.corpora.addresses import addresses_text


def text(data: ml_collections.ConfigDict) -> str:
    return addresses_text(president="Obama")


def file_name(data: ml_collections.ConfigDict) -> str:
    return "obama.txt"

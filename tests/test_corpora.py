import sys
import types

import pandas as pd
import pytest

from charlstm import config as config_lib
from charlstm import corpora
from charlstm.corpora.addresses import remove_stage_directions
from charlstm.errors import CharLSTMError
from tests.conftest import assert_one_line_error, run_script


def test_stage_directions_are_removed_and_editorial_words_kept():
    text = "Thank you. [Applause] We did it [laughter].\n[Laughter] Next [on]* time [see APP Note].\n[ As delivered ]"
    assert remove_stage_directions(text) == "Thank you. We did it.\nNext on time.\n"


def data_config(tmp_path, corpus="sotu", first_year=0, last_year=0):
    data = config_lib.default_config().data
    data.corpus, data.dir, data.first_year, data.last_year = corpus, str(tmp_path), first_year, last_year
    return data


@pytest.fixture
def fake_sotu(monkeypatch):
    """A sotu-like package of four documents, one not an address, listed out of date order."""
    meta = pd.DataFrame(
        {
            "fileid": ["1862-Lincoln-1", "1790-Washington-2", "1790-Washington-1", "1861-Lincoln-x"],
            "year": [1862, 1790, 1790, 1861],
            "date": ["1862-12-01", "1790-12-08", "1790-01-08", "1861-03-04"],
            "president": ["Lincoln", "Washington", "Washington", "Lincoln"],
            "is_sotu": [True, True, True, False],
        }
    )
    raw = {
        "1790-Washington-1": "  First address. [Applause]\n",
        "1790-Washington-2": "Second [on]* address.",
        "1862-Lincoln-1": "Fellow-citizens [Laughter] of the Senate.",
        "1861-Lincoln-x": "An inaugural, not an address.",
    }
    module = types.SimpleNamespace(metadata=lambda: meta, raw=raw.__getitem__)
    monkeypatch.setitem(sys.modules, "sotu", module)


def test_sotu_corpus_is_every_address_in_date_order(tmp_path, fake_sotu):
    path = corpora.builtin_corpus_path(data_config(tmp_path))
    assert path == tmp_path / "sotu.txt"
    assert path.read_text() == "First address.\n\nSecond on address.\n\nFellow-citizens of the Senate.\n"


def test_a_year_range_selects_addresses_and_names_its_file(tmp_path, fake_sotu):
    path = corpora.builtin_corpus_path(data_config(tmp_path, first_year=1800))
    assert path == tmp_path / "sotu_1800-.txt"
    assert path.read_text() == "Fellow-citizens of the Senate.\n"
    with pytest.raises(CharLSTMError, match="no State of the Union address in years 1800..1850"):
        corpora.builtin_corpus_path(data_config(tmp_path, first_year=1800, last_year=1850))


def test_a_cut_short_corpus_file_is_rebuilt_atomically(tmp_path, fake_sotu, capsys):
    path = corpora.builtin_corpus_path(data_config(tmp_path))
    full = path.read_text()
    path.write_text(full[:10])  # What a killed non-atomic build would leave.
    corpora.builtin_corpus_path(data_config(tmp_path))
    assert path.read_text() == full
    assert "rebuilt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sotu.txt"]  # No temporary file left.


def test_obama_corpus_is_written_once_in_year_order(tmp_path):
    path = corpora.builtin_corpus_path(data_config(tmp_path, corpus="obama"))
    text = path.read_text()
    assert text.startswith("Madam Speaker, Vice President Biden")  # 2010 comes first.
    assert "[" not in text and 250_000 < len(text) < 300_000
    assert text.index("1 year later") < text.index("eighth year")  # 2010 before 2016.
    mtime = path.stat().st_mtime_ns
    corpora.builtin_corpus_path(data_config(tmp_path, corpus="obama"))
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_unknown_corpus_names_the_choices(tmp_path):
    with pytest.raises(CharLSTMError, match=r"unknown corpus 'nope': use one of 'obama', 'sotu'"):
        corpora.builtin_corpus_path(data_config(tmp_path, corpus="nope"))
    result = run_script("train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
                        "--config.data.corpus=nope")
    assert_one_line_error(result, "data.corpus='nope'", *map(repr, corpora.NAMES), "data.path")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", corpora.NAMES)
def test_every_builtin_corpus_builds_from_the_installed_package(tmp_path, name):
    """Each registered corpus writes its file, named by the corpus, and reads it back without rewriting it."""
    data = data_config(tmp_path, corpus=name)
    path = corpora.builtin_corpus_path(data)
    assert path.parent == tmp_path and path.name == corpora.CORPORA[name].file_name(data)
    assert path.stat().st_size > 100_000 and path.read_text(encoding="utf-8") == corpora.CORPORA[name].text(data)
    mtime = path.stat().st_mtime_ns
    assert corpora.builtin_corpus_path(data) == path and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.first_year": 1900}, "data.first_year=1900 is invalid: it must be 0 unless data.corpus='sotu'"),
        ({"data.corpus": "sotu", "data.first_year": 1950, "data.last_year": 1900}, "data.last_year=1900"),
        ({"data.corpus": "sotu", "data.last_year": -1}, "data.last_year=-1"),
    ],
)
def test_year_bounds_are_validated(overrides, message):
    config = config_lib.default_config()
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    with pytest.raises(CharLSTMError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_lib.validate(config)

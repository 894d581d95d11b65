from charlstm import corpora


def test_stage_directions_are_removed_and_editorial_words_kept():
    text = "Thank you. [Applause] We did it [laughter].\n[Laughter] Next [on]* time."
    assert corpora.remove_stage_directions(text) == "Thank you. We did it.\nNext on time."


def test_obama_corpus_is_written_once_in_year_order(tmp_path):
    path = corpora.builtin_corpus_path("obama", tmp_path)
    text = path.read_text()
    assert text.startswith("Madam Speaker, Vice President Biden")  # 2010 comes first.
    assert "[" not in text and 250_000 < len(text) < 300_000
    assert text.index("1 year later") < text.index("eighth year")  # 2010 before 2016.
    mtime = path.stat().st_mtime_ns
    corpora.builtin_corpus_path("obama", tmp_path)
    assert path.stat().st_mtime_ns == mtime

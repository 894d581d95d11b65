import random

from charlstm import novelty

TRAIN = "the quick brown fox jumps over the lazy dog. "


def test_the_figures_of_a_hand_made_sample():
    sample = "my quick brown fox jumps over it"  # 32 chars; 13 substrings of 20.
    figures = novelty.novelty(sample, TRAIN)
    assert figures.longest_copy == " quick brown fox jumps over "  # Chars 2..29: starts 2..10 of 20 fit.
    assert figures.copied_share == 9 / 13


def test_a_sample_shorter_than_the_substrings_has_no_share():
    assert novelty.novelty("lazy dog", TRAIN) == novelty.Novelty("lazy dog", None)
    assert novelty.novelty("", TRAIN) == novelty.Novelty("", None)
    assert novelty.novelty("#" * 25, TRAIN) == novelty.Novelty("", 0.0)


def test_match_lengths_equal_brute_force():
    rng = random.Random(0)
    train = "".join(rng.choice("abc") for _ in range(300))
    text = "".join(rng.choice("abcd") for _ in range(200))
    brute = [max(n for n in range(len(text) - i + 1) if text[i : i + n] in train) for i in range(len(text))]
    assert novelty.match_lengths(text, train) == brute


def test_summary_takes_the_longest_copy_and_the_mean_share():
    texts = ["my quick brown fox jumps over it", "a lazy dog. the quick brown cat", "dog"]
    summary = novelty.summary(texts, TRAIN)
    shares = [novelty.novelty(t, TRAIN).copied_share for t in texts[:2]]
    assert summary == {"longest_copy": 28, "copied_share": sum(shares) / 2}
    assert novelty.summary([], TRAIN) == {"longest_copy": 0, "copied_share": None}


def test_an_epoch_without_a_searchable_training_text_has_no_figures():
    figures = novelty.epoch_summary(["some sample text"], None)
    assert figures == {"longest_copy": None, "copied_share": None}
    assert "not computed" in novelty.describe_summary(figures)
    assert novelty.describe_summary(novelty.epoch_summary(["abcabc"], "xxabcx")) == (
        "longest copy 3 chars, n/a of 20-grams copied"
    )

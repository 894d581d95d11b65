"""The lab's overfitting test as numbers: how much of a generated sample is copied from the training text.

A model that memorises writes long verbatim stretches of its training text;
one that generalises writes new strings from familiar pieces.
"""

import dataclasses

# Length of the substrings whose share found in the training text is reported.
NGRAM = 20


def match_lengths(text: str, train_text: str) -> list[int]:
    """For each position i of `text`, the length of the longest prefix of text[i:] found in `train_text`.

    A match at i less its first character is a match at i+1, so the end never
    moves back: at most 2*len(text) substring searches of `train_text`.
    """
    lengths, end = [], 0
    for start in range(len(text)):
        end = max(end, start)
        while end < len(text) and text[start : end + 1] in train_text:
            end += 1
        lengths.append(end - start)
    return lengths


@dataclasses.dataclass(frozen=True)
class Novelty:
    """How much of one sample occurs verbatim in the training text."""

    longest_copy: str  # The sample's longest substring that occurs in the training text.
    copied_share: float | None  # Share of its NGRAM-char substrings found there; None when shorter than NGRAM.


def novelty(text: str, train_text: str) -> Novelty:
    """The figures of one sample; a substring at i is in the training text iff its length <= match_lengths[i]."""
    lengths = match_lengths(text, train_text) or [0]
    start = max(range(len(lengths)), key=lengths.__getitem__)
    ngram_lengths = lengths[: len(text) - NGRAM + 1]
    share = sum(n >= NGRAM for n in ngram_lengths) / len(ngram_lengths) if ngram_lengths else None
    return Novelty(text[start : start + lengths[start]], share)


def summary(texts: list[str], train_text: str) -> dict:
    """Figures for a set of samples, e.g. an epoch's: the longest copy over all (chars), the mean copied share."""
    figures = [novelty(text, train_text) for text in texts]
    shares = [f.copied_share for f in figures if f.copied_share is not None]
    return {
        "longest_copy": max((len(f.longest_copy) for f in figures), default=0),
        "copied_share": sum(shares) / len(shares) if shares else None,
    }


# Longest training text searched each epoch: every search scans it (about 0.3 s per sample at 20M chars).
EPOCH_MAX_TRAIN_CHARS = 20_000_000


def epoch_summary(texts: list[str], train_text: str | None) -> dict:
    """summary() of an epoch's samples; None figures when `train_text` is None (too long to search each epoch)."""
    return summary(texts, train_text) if train_text is not None else {"longest_copy": None, "copied_share": None}


def describe_summary(figures: dict) -> str:
    """An epoch's figures in a few words, for the training log."""
    if figures["longest_copy"] is None:
        return f"novelty not computed (training text over {EPOCH_MAX_TRAIN_CHARS:,} chars)"
    return (
        f"longest copy {figures['longest_copy']} chars, "
        f"{format_share(figures['copied_share'])} of {NGRAM}-grams copied"
    )


def format_share(share: float | None) -> str:
    """A copied share as a percentage; 'n/a' when the samples were shorter than NGRAM."""
    return "n/a" if share is None else f"{share:.0%}"


def describe(figures: Novelty) -> str:
    """One line for a person: the longest copy and the copied share."""
    return (
        f"longest substring found in the training text: {len(figures.longest_copy)} chars "
        f"{figures.longest_copy!r}; {NGRAM}-char substrings found there: {format_share(figures.copied_share)}"
    )

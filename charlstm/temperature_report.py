"""Which sampling temperature reads best, measured: per temperature, how likely, how varied and how
copied its samples are, as report.md, report.csv and report.png in one folder.

The model's own bits per character favour the lowest temperature; the outside judge is the run's
Kneser-Ney baseline (charlstm.ngram.best_on_validation), which scores the samples as text of the
training corpus would be scored. Distinct n-grams catch loops, the copied share memorisation.
"""

import dataclasses
import statistics
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from charlstm import evaluate, generation, ngram, novelty, reports
from charlstm.data import Vocab
from charlstm.errors import CharLSTMError
from charlstm.ngram import KneserNey

REPORT_MD, REPORT_CSV, REPORT_PNG = "report.md", "report.csv", "report.png"
DISTINCT_N = (2, 3, 4)
COLUMNS = (
    "temperature", "samples", "model_bpc", "kn_bpc", "kn_order", *(f"distinct_{n}" for n in DISTINCT_N),
    "copied_share", "longest_copy",
)
# How report.md shows each column's numbers (format specs); the rest as they are.
FORMATS = {
    "model_bpc": ".3f", "kn_bpc": ".3f", **{f"distinct_{n}": ".3f" for n in DISTINCT_N},
    "copied_share": ".1%", "longest_copy": ".1f",
}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated sample, the report's input."""

    temperature: float
    prompt_ids: np.ndarray  # [prompt_length] the ids the model continued.
    ids: np.ndarray  # [length] the model's continuation, without the prompt.
    model_bpc: float  # Bits per character of `ids` under the model given the prompt; the caller scores it.


def distinct(texts: list[str], n: int) -> float | None:
    """Distinct-n: distinct n-grams over all n-grams of `texts`, pooled (an n-gram never spans two
    texts); None when no text has n characters."""
    grams = [text[i : i + n] for text in texts for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def kneser_ney_bpc(kneser_ney: KneserNey, prompt_ids: np.ndarray, ids: np.ndarray) -> float:
    """Mean bits per character of `ids` `[length]` under `kneser_ney`, each id predicted from the
    order - 1 ids before it in prompt + sample."""
    if len(prompt_ids) < kneser_ney.order - 1:
        raise CharLSTMError(
            f"a prompt of {len(prompt_ids)} characters is shorter than the {kneser_ney.order - 1} that the "
            f"order-{kneser_ney.order} Kneser-Ney model reads: give a longer prompt"
        )
    nll = kneser_ney.per_char_nll(np.concatenate([prompt_ids, ids]), len(prompt_ids))
    return evaluate.bits_per_char(evaluate.average(nll))


def _mean(values: list[float]) -> float | None:
    """The mean of `values`, None of none."""
    return statistics.fmean(values) if values else None


def _row(temperature: float, samples: list[Sample], train_text: str, vocab: Vocab, kneser_ney: KneserNey) -> dict:
    """COLUMNS for the samples of one temperature."""
    texts = [vocab.decode(sample.ids) for sample in samples]
    figures = [novelty.novelty(text, train_text) for text in texts]
    return {
        "temperature": temperature,
        "samples": len(samples),
        "model_bpc": _mean([sample.model_bpc for sample in samples]),
        "kn_bpc": _mean([kneser_ney_bpc(kneser_ney, sample.prompt_ids, sample.ids) for sample in samples]),
        "kn_order": kneser_ney.order,
        **{f"distinct_{n}": distinct(texts, n) for n in DISTINCT_N},
        "copied_share": _mean([f.copied_share for f in figures if f.copied_share is not None]),
        "longest_copy": _mean([len(f.longest_copy) for f in figures]),
    }


def summarise(samples: list[Sample], train_ids: np.ndarray, vocab: Vocab, kneser_ney: KneserNey) -> list[dict]:
    """One row of COLUMNS per temperature, lowest first.

    model_bpc, kn_bpc, copied_share (of novelty.NGRAM-char substrings, over the samples that long) and
    longest_copy (chars) are means over the temperature's samples, one weight per sample. distinct_n is
    pooled over them, not averaged: it then also falls when samples repeat each other (low temperatures
    converge on one continuation of a prompt), not only when one repeats itself. A pooled ratio falls
    as more text is pooled, so temperatures compare when they have the same number and length of samples.
    """
    train_text = vocab.decode(train_ids)
    by_temperature: dict[float, list[Sample]] = {}
    for sample in samples:
        by_temperature.setdefault(sample.temperature, []).append(sample)
    return [_row(t, group, train_text, vocab, kneser_ney) for t, group in sorted(by_temperature.items())]


def first_examples(samples: list[Sample], vocab: Vocab) -> dict[float, tuple[str, str]]:
    """Per temperature, lowest first, the prompt and text of its first sample: write_report's examples."""
    examples = {}
    for sample in samples:
        examples.setdefault(sample.temperature, (vocab.decode(sample.prompt_ids), vocab.decode(sample.ids)))
    return dict(sorted(examples.items()))


def _cell(column: str, value) -> str:
    """A row's value as report.md shows it (FORMATS)."""
    return "n/a" if value is None else format(value, FORMATS.get(column, ""))


def markdown(rows: list[dict], examples: dict[float, tuple[str, str]], title: str) -> str:
    """report.md: the table, the plot and one sample per temperature, its prompt marked."""
    parts = [
        f"# {title}\n",
        "Per sampling temperature, means over its samples (distinct-n pooled over them). Bits per character "
        "of the samples under the model and under a Kneser-Ney model of the training text; distinct n-gram "
        f"ratios; the share of {novelty.NGRAM}-character substrings found in the training text and the "
        "longest such substring (chars).\n",
        reports.table_markdown(rows, _cell),
        f"![bits per character, distinct 4-grams and copied share per temperature]({REPORT_PNG})\n",
        "## One sample per temperature\n",
        f"The prompt is between {reports.PROMPT_OPEN} and {reports.PROMPT_CLOSE}; the rest is the model's.\n",
    ]
    parts += [f"Temperature {t}:\n\n{reports.marked_sample(*example)}\n" for t, example in examples.items()]
    return "\n".join(parts)


def plot(rows: list[dict], title: str) -> Figure:
    """Bits per character (model, Kneser-Ney) above; distinct-4 and copied share below; against temperature."""
    column = {c: np.array([row[c] for row in rows], dtype=float) for c in COLUMNS}  # None becomes NaN.
    fig = Figure(figsize=(7, 7), layout="constrained")
    bits, shares = fig.subplots(2, 1, sharex=True)
    bits.plot(column["temperature"], column["model_bpc"], "o-", label="under the model")
    bits.plot(column["temperature"], column["kn_bpc"], "s-", label=f"under Kneser-Ney order {rows[0]['kn_order']}")
    bits.set(ylabel="bits per character of the samples", title=title)
    shares.plot(column["temperature"], column["distinct_4"], "o-", label="distinct 4-grams / all 4-grams")
    shares.plot(
        column["temperature"], column["copied_share"], "s-",
        label=f"{novelty.NGRAM}-char substrings found in the training text",
    )
    shares.set(xlabel="sampling temperature", ylabel="share", ylim=(-0.02, 1.02))
    for ax in (bits, shares):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def write_report(directory: str | Path, rows: list[dict], examples: dict[float, tuple[str, str]], title: str) -> None:
    """Writes report.md, report.csv (full-precision numbers) and report.png into `directory`, made if new."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CharLSTMError(f"{str(directory)!r} is a file, not a folder: give a folder path for the report")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharLSTMError(
            f"cannot make the report folder {str(directory)!r}: {e.strerror}: give a path where a folder can be made"
        ) from None
    (directory / REPORT_MD).write_text(markdown(rows, examples, title))
    (directory / REPORT_CSV).write_text(reports.table_csv(rows))
    reports.save_png(plot(rows, title), directory / REPORT_PNG)


def sweep(model: generation.Model, prompt: str, temperatures: tuple[float, ...], num_samples: int, seed: int,
          length: int | None, directory: str | Path) -> list[dict]:
    """Samples `prompt` at each temperature, `num_samples` each in one batched call, and writes the report
    of them into `directory`; returns its rows. The Kneser-Ney judge is fitted on the run's corpus."""
    prompt_ids = model.prompt_ids(prompt)  # Cleaned once: its warnings print once.
    samples = model.generate(model.vocab.decode(prompt_ids), length, temperatures, seed=seed, num_samples=num_samples)
    corpus = model.run.corpus()
    scored = [Sample(s.temperature, prompt_ids, model.vocab.encode(s.text), s.bpc) for s in samples]
    orders = tuple(order for order in ngram.ORDERS if order - 1 <= len(prompt_ids))
    judge = ngram.best_on_validation(corpus, model.config.data.seq_length, orders)
    rows = summarise(scored, corpus.train_ids, model.vocab, judge)
    title = f"Sampling temperatures of {model.run.path.name} at step {model.step}"
    write_report(directory, rows, first_examples(scored, model.vocab), title)
    return rows

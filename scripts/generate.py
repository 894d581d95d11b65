"""Writes text with a trained run; everything (model, vocab, sampling settings) comes from its folder.

    python scripts/generate.py --workdir runs/obama --prompt "the state of our union is" --length 500
    python scripts/generate.py --workdir runs/obama --config.sample.temperatures='(0.2,0.5,1.0,1.5)' \\
        --num_samples 4 --seed 7 --novelty

Without --prompt, each call starts from a random window of the validation
text (the seed picks it). The prompt is cleaned as the training text was;
characters the cleaning removes are dropped with a warning, and characters it
keeps that the run never saw are an error (--config.sample.oov=skip drops
them). Rows are temperatures x samples, all in one batched call; sample s
draws from fold_in(key(seed), s) at every temperature, so its text does not
depend on the other temperatures asked for.
"""

import sys

import numpy as np
from absl import flags

from charlstm import cli, data, generation, interactive, novelty, sampling, trained_run
from charlstm.errors import CharLSTMError
from charlstm.run_folder import sample_block

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue; empty: a random validation window of seq_length chars.")
_LENGTH = flags.DEFINE_integer(
    "length", None, "Characters per sample; default: the run's sample.length.", lower_bound=1
)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples per temperature.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Picks the random prompt and the samples; the same seed repeats them.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the samples to this file instead of stdout.")
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length", 100_000, "Refuse longer samples: each is printed only when complete.", lower_bound=1
)
_NOVELTY = flags.DEFINE_bool(
    "novelty", False, "After each sample: how much of it occurs verbatim in the training text."
)
_INTERACTIVE = flags.DEFINE_bool(
    "interactive", False, "Read prompts and :commands line by line, stream each continuation (:help lists them)."
)
cli.define_config_overrides(
    trained_run.default_config(), "Overrides of the run's config, e.g. --config.sample.top_k=5."
)
flags.mark_flags_as_required(["workdir"])


def choose_prompt(run: trained_run.Run, corpus: data.Corpus | None, prompt: str, seed: int) -> np.ndarray:
    """Ids of `prompt`, or of a random validation window of `corpus` picked by `seed` when it is empty."""
    if not prompt:
        return data.random_window(corpus.val_ids, run.config.data.seq_length, np.random.default_rng(seed))
    ids, warnings = run.encode(prompt, "prompt")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not len(ids):
        raise CharLSTMError(
            "the prompt has no characters left after cleaning: give another, or none to start at random"
        )
    return ids


def main() -> None:
    prompt_text, seed, num_samples, novel = _PROMPT.value, _SEED.value, _NUM_SAMPLES.value, _NOVELTY.value
    overrides = cli.config_overrides()
    if _LENGTH.value is not None:
        overrides["sample.length"] = _LENGTH.value
    run = trained_run.load(_WORKDIR.value, _CHECKPOINT.value, overrides)
    if _INTERACTIVE.value:  # Priming in pieces: prompts of any length compile a few shapes once.
        sys.exit(interactive.run(generation.Model(run, prime_in_pieces=True)))
    if run.config.sample.length > _MAX_LENGTH.value:
        raise CharLSTMError(
            f"a sample length of {run.config.sample.length:,} characters is over --max_length={_MAX_LENGTH.value:,}: "
            "samples print only when complete, which may take minutes; pass a larger --max_length to allow it"
        )
    corpus = run.corpus() if novel or not prompt_text else None
    prompt = choose_prompt(run, corpus, prompt_text, seed)
    temperatures, keys = sampling.sample_rows(run.config.sample.temperatures, num_samples, seed)
    texts = sampling.sample_texts(run.graphdef, run.params, run.vocab, prompt, temperatures, keys, run.config.sample)
    train_text = run.vocab.decode(corpus.train_ids) if novel else ""
    blocks = [f"--- prompt: {run.vocab.decode(prompt)!r}\n"]
    for i, (temperature, text) in enumerate(zip(temperatures, texts)):
        blocks.append(sample_block(temperature, text, f", sample {i % num_samples + 1}") + "\n")
        if novel:
            blocks.append(f"--- novelty: {novelty.describe(novelty.novelty(text, train_text))}\n")
    if _OUTPUT.value:
        cli.write_file(_OUTPUT.value, "".join(blocks), "output")
        print(f"wrote {len(texts)} samples from step {run.step} to {_OUTPUT.value}")
    else:
        print("".join(blocks), end="")


if __name__ == "__main__":
    cli.run(main, "quote the prompt, e.g. --prompt \"the state of\"")

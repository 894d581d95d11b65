"""Writes text with a trained run; everything (model, vocab, sampling settings) comes from its folder.

    python scripts/generate.py --workdir runs/obama --prompt "the state of our union is" --length 500
    python scripts/generate.py --workdir runs/obama --temperature 0.2,0.5,1.0 --num_samples 4 --rank
    python scripts/generate.py --workdir runs/obama --sweep_temperatures 0.2,0.5,0.8,1.0,1.2,1.5 \\
        --num_samples 16 --report runs/obama/temperatures
    python scripts/generate.py --workdir runs/obama --interactive

One sample (one temperature, one sample) or --stream prints as it is made;
more are made in one batched call and printed when complete (--rank sorts
them by likelihood). Each sample ends with its bits per character under the
model and under the distribution it was drawn from. The prompt comes from
--prompt, --prompt - (stdin) or --prompt_file, cleaned as the training text
was; without one, a random validation window (picked by --seed). Sample s
draws from fold_in(key(seed), s) at every temperature. Ctrl-C keeps what was
printed and exits 130.
"""

import contextlib
import json
import sys
from pathlib import Path

from absl import flags

from charlstm import cli, generation, interactive, novelty, temperature_report
from charlstm.errors import CharLSTMError
from charlstm.run_folder import sample_block

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue ('-': read stdin); empty: a random validation window.")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", "", "Continue the text of this file (UTF-8).")
_LENGTH = flags.DEFINE_integer("length", None, "Characters per sample; default: the run's sample.length.",
                               lower_bound=1)
_TEMPERATURE = flags.DEFINE_list("temperature", None, "Sampling temperatures, e.g. 0.5 or 0.2,0.5,1.0 (0 = greedy); "
                                 "default: the run's sample.temperatures.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Draw from the k likeliest characters only (0 = all).", lower_bound=0)
_TOP_P = flags.DEFINE_float("top_p", None, "Draw from the smallest set of characters holding this probability.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples per temperature (with --beam: the best N beams).",
                                    lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Picks the random prompt and the samples; the same seed repeats them.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
_OUTPUT = flags.DEFINE_string("output", "", "Write the samples to this file instead of stdout (x.jsonl: JSON lines).")
_FORMAT = flags.DEFINE_enum("format", None, ["text", "jsonl", "raw"], "text: headers and bits per character; jsonl: "
                            "one JSON object per sample; raw: the samples alone. Default: jsonl for a .jsonl "
                            "--output, else text.")
_STREAM = flags.DEFINE_bool("stream", False, "Print each sample as it is made, one after another.")
_RANK = flags.DEFINE_bool("rank", False, "Print the samples most likely under the model first.")
_BEAM = flags.DEFINE_integer("beam", None, "Beam search of this width for the likeliest continuation.", lower_bound=1)
_SWEEP = flags.DEFINE_list("sweep_temperatures", None, "With --report: sample at each of these temperatures.")
_REPORT = flags.DEFINE_string("report", "", "Folder for the temperature report (report.md, report.csv, report.png).")
_INTERACTIVE = flags.DEFINE_bool("interactive", False, "Type prompts, see continuations; :help lists the commands.")
_MAX_LENGTH = flags.DEFINE_integer(
    "max_length", 100_000, "Refuse longer samples unless they are streamed: batched ones print when complete.",
    lower_bound=1,
)
_NOVELTY = flags.DEFINE_bool("novelty", False, "After each sample: how much of it is verbatim in the training text.")
cli.define_config_overrides(
    generation.default_config(), "Overrides of the run's config, e.g. --config.sample.top_k=5."
)
flags.mark_flags_as_required(["workdir"])


def overrides() -> dict:
    """The --config.* overrides, with the short flags (--length, --temperature, --top_k, --top_p) over them."""
    result = cli.config_overrides()
    for field, value in (("length", _LENGTH.value), ("top_k", _TOP_K.value), ("top_p", _TOP_P.value)):
        if value is not None:
            result[f"sample.{field}"] = value
    if _TEMPERATURE.value is not None:
        result["sample.temperatures"] = generation.parse_temperatures(_TEMPERATURE.value, "temperature")
    return result


def check_flags() -> None:
    """Refuses flags that contradict each other, before the run is loaded."""
    if _BEAM.value is not None and (sampled := [f for f in ("temperature", "top_k", "top_p", "stream", "rank")
                                                if flags.FLAGS[f].present]):
        raise CharLSTMError(f"--beam searches for the likeliest text, so --{sampled[0]} does not apply: drop one")
    if _BEAM.value is not None and _NUM_SAMPLES.value > _BEAM.value:
        raise CharLSTMError(f"--num_samples={_NUM_SAMPLES.value} is more than --beam={_BEAM.value} keeps: lower it")
    if bool(_SWEEP.value) != bool(_REPORT.value):
        raise CharLSTMError("--sweep_temperatures and --report go together: give both, or neither")
    if _PROMPT.value and _PROMPT_FILE.value:
        raise CharLSTMError("give --prompt or --prompt_file, not both")
    if _PROMPT.value.startswith("@") and Path(_PROMPT.value[1:]).is_file():
        raise CharLSTMError(f"--prompt={_PROMPT.value} names a file: pass --prompt_file={_PROMPT.value[1:]}")


def prompt_text(model: generation.Model) -> str:
    """The prompt the flags ask for: --prompt_file, stdin (--prompt -), --prompt, or a random window."""
    if _PROMPT_FILE.value:
        return generation.read_prompt(_PROMPT_FILE.value)
    if _PROMPT.value == "-":
        return generation.read_prompt("-")
    return _PROMPT.value or model.random_prompt(_SEED.value)


class Printer:
    """Samples written to stdout or --output as they come, in the --format asked for."""

    def __init__(self, out, form: str, prompt: str, train_text: str | None):
        self.out, self.form, self.train_text = out, form, train_text
        self.write("" if form != "text" else f"--- prompt: {prompt!r}\n")

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def begin(self, temperature: float | None, number: int) -> None:
        if self.form == "text":
            label = f"beam, rank {number + 1}" if temperature is None else f"sample {number + 1}"
            self.write(sample_block(temperature, "", f", {label}") if temperature is not None else f"--- {label}:\n")

    def piece(self, text: str) -> None:
        if self.form != "jsonl":
            self.write(text)

    def end(self, sample: generation.Sample) -> None:
        if self.form == "jsonl":
            return self.write(json.dumps(sample.record()) + "\n")
        self.write("\n")
        if self.form == "text":
            self.write(f"--- {generation.describe_bpc(sample)}\n")
            if self.train_text is not None:
                self.write(f"--- novelty: {novelty.describe(novelty.novelty(sample.text, self.train_text))}\n")

    def sample(self, sample: generation.Sample) -> None:
        self.begin(sample.temperature, sample.sample)
        self.piece(sample.text)
        self.end(sample)


def write_samples(model: generation.Model, printer: Printer, prompt: str) -> None:
    """The samples the flags ask for: beam results, streamed samples, or one batched call."""
    s, num_samples, seed = model.config.sample, _NUM_SAMPLES.value, _SEED.value
    if _BEAM.value is not None:
        for found in model.beam(prompt, _BEAM.value, s.length)[:num_samples]:
            printer.sample(found)
        return
    if (_STREAM.value or len(s.temperatures) * num_samples == 1) and not _RANK.value:
        for temperature in s.temperatures:
            for number in range(num_samples):
                printer.begin(temperature, number)
                printer.end(model.stream_sample(printer.piece, prompt, temperature=temperature, seed=seed,
                                                sample=number))
        return
    if s.length > _MAX_LENGTH.value:
        raise CharLSTMError(
            f"{len(s.temperatures) * num_samples} samples of {s.length:,} characters are over --max_length="
            f"{_MAX_LENGTH.value:,}: they print only when complete; pass --stream, or a larger --max_length"
        )
    samples = model.generate(prompt, None, s.temperatures, seed=seed, num_samples=num_samples)
    for sample in sorted(samples, key=lambda x: x.bpc) if _RANK.value else samples:
        printer.sample(sample)


def main() -> None:
    check_flags()
    # An interactive session primes in pieces: prompts of any length compile a few shapes once.
    model = generation.load(_WORKDIR.value, _CHECKPOINT.value, overrides(), prime_in_pieces=_INTERACTIVE.value)
    if _INTERACTIVE.value:
        sys.exit(interactive.run(model))
    prompt = model.vocab.decode(model.prompt_ids(prompt_text(model)))  # Cleaned once: warnings once.
    if _REPORT.value:
        sweep = generation.parse_temperatures(_SWEEP.value, "sweep_temperatures")
        temperature_report.sweep(model, prompt, sweep, _NUM_SAMPLES.value, _SEED.value, None, _REPORT.value)
        return print(f"wrote the temperature report of {len(sweep)} temperatures to {_REPORT.value}/report.md")
    form = _FORMAT.value or ("jsonl" if _OUTPUT.value.endswith(".jsonl") else "text")
    train_text = model.vocab.decode(model.run.corpus().train_ids) if _NOVELTY.value else None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(cli.open_output(_OUTPUT.value, "output")) if _OUTPUT.value else sys.stdout
        printer = Printer(out, form, prompt, train_text)
        try:
            write_samples(model, printer, prompt)
        except KeyboardInterrupt:
            printer.write("\n")
            print("interrupted: kept what was written", file=sys.stderr)
            sys.exit(130)
    if _OUTPUT.value:
        print(f"wrote samples from step {model.step} to {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main, "quote the prompt, e.g. --prompt \"the state of\"")

"""generate.py --interactive: prompts in, continuations streamed out, settings changed by `:name value`.

The model is loaded once and each setting is a traced value of the sampler or a
small shape, so changing one never reloads. stdout carries the continuations
only, one per prompt line, each ended by a newline; the bits per character,
:help and errors go to stderr, so over a pipe the output composes with other
tools. Ctrl-C during a continuation stops it; Ctrl-C while a line is awaited
ends the session with exit code 130; EOF and :quit end it with 0.
"""

import dataclasses
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import ml_collections

from charlstm.errors import CharLSTMError
from charlstm.generation import Model

INTERRUPTED = 130  # The exit code of a session ended by Ctrl-C: 128 + SIGINT, as the shell reports it.


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the next continuation is drawn with; every field is a command of COMMANDS."""

    temperature: float
    length: int
    top_k: int
    top_p: float
    seed: int

    @classmethod
    def from_config(cls, sample: ml_collections.ConfigDict) -> "Settings":
        """The run's `sample` config: its first temperature, its length, top-k and top-p; seed 0."""
        return cls(float(sample.temperatures[0]), sample.length, sample.top_k, sample.top_p, 0)

    def describe(self) -> str:
        return ", ".join(f"{field.name} {getattr(self, field.name)}" for field in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True)
class Command:
    """One `:name value` command: what it does and, for a setting, its value's type, which values are
    valid, those in words (for errors and :help) and an example."""

    does: str
    kind: type | None = None  # None: the command takes no value.
    valid: Callable[[float], bool] = lambda _: True
    values: str = ""
    example: str = ""


COMMANDS = {
    "temperature": Command("sampling temperature", float, lambda t: 0 <= t < math.inf, "a number >= 0 (0 = greedy)",
                           "0.7"),
    "length": Command("characters per continuation", int, lambda n: n >= 1, "an integer >= 1", "300"),
    "top_k": Command("draw among the k most likely characters", int, lambda k: k >= 0, "an integer >= 0 (0 = all)",
                     "5"),
    "top_p": Command("draw within the smallest set reaching probability p", float,
                     lambda p: 0 < p <= 1, "a number in (0, 1] (1 = all)", "0.9"),
    "seed": Command("picks the draws (a prompt repeats its continuation)", int,
                    lambda s: 0 <= s < 2**32, "an integer in [0, 2**32)", "3"),
    "help": Command("list the commands and the settings"),
    "quit": Command("end the session (as Ctrl-D)"),
}


def parse_command(line: str) -> tuple[str, int | float | None]:
    """A `:name value` line -> the command's name and its value read by COMMANDS (None for :help, :quit)."""
    name, _, text = line.removeprefix(":").strip().partition(" ")
    if name not in COMMANDS:
        raise CharLSTMError(f"unknown command :{name}: the commands are {', '.join(':' + n for n in COMMANDS)}")
    command, text = COMMANDS[name], text.strip()
    if command.kind is None:
        if text:
            raise CharLSTMError(f":{name} takes no value, not {text!r}: type :{name} alone")
        return name, None
    try:
        value = command.kind(text)
    except ValueError:
        value = None
    if value is None or not command.valid(value):
        raise CharLSTMError(f":{name} needs {command.values}, not {text!r}: e.g. :{name} {command.example}")
    return name, value


def help_text(settings: Settings) -> str:
    """What :help prints: a line per command of COMMANDS, a setting's with its values and its value now."""
    lines = ["a line not starting with ':' is a prompt; Ctrl-C stops a continuation, Ctrl-D ends the session"]
    for name, command in COMMANDS.items():
        now = f"; {command.values}, now {getattr(settings, name)}" if command.kind else ""
        lines.append(f"  :{(name + ' ' + command.example).strip():17} {command.does}{now}")
    return "\n".join(lines) + "\n"


class Session:
    """Reads lines from `lines`: a prompt is continued onto `out` as it is drawn, a command changes
    `settings`; everything else goes to `messages`."""

    def __init__(self, model: Model, out: TextIO, messages: TextIO):
        self.model, self.out, self.messages = model, out, messages
        self.settings = Settings.from_config(model.config.sample)

    def run(self, lines: Iterable[str]) -> int:
        """Runs until `lines` ends or :quit (0) or Ctrl-C while a line is awaited (INTERRUPTED)."""
        try:
            for line in lines:
                line = line.rstrip("\r\n")
                try:
                    if line.startswith(":"):
                        if not self.command(line):
                            return 0
                    elif line:
                        self.continue_prompt(line)
                except CharLSTMError as e:
                    print(f"error: {e}", file=self.messages, flush=True)
        except KeyboardInterrupt:
            print(file=self.messages)
            return INTERRUPTED
        return 0

    def command(self, line: str) -> bool:
        """Carries out a `:name value` line; False for :quit."""
        name, value = parse_command(line)
        if name == "help":
            print(help_text(self.settings), end="", file=self.messages, flush=True)
        elif name != "quit":
            self.settings = dataclasses.replace(self.settings, **{name: value})
        return name != "quit"

    def continue_prompt(self, prompt: str) -> None:
        """Streams the continuation of `prompt`, then its bits per character under the model."""
        s = self.settings

        def write(piece: str) -> None:
            print(piece, end="", file=self.out, flush=True)

        try:
            sample = self.model.stream_sample(
                write, prompt, length=s.length, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=s.seed
            )
        except KeyboardInterrupt:
            print(file=self.out, flush=True)
            print("stopped (Ctrl-C between continuations ends the session)", file=self.messages, flush=True)
            return
        print(file=self.out, flush=True)
        print(f"{sample.bpc:.3f} bits per character under the model ({s.describe()})", file=self.messages, flush=True)


def typed_lines(prompt: str) -> Iterator[str]:
    """Lines typed at a terminal, after `prompt`, with readline's editing and history, until Ctrl-D."""
    import readline  # noqa: F401  (input() edits lines and keeps their history once it is imported)

    while True:
        try:
            yield input(prompt)
        except EOFError:
            print()
            return


def run(model: Model) -> int:
    """The session on this process's stdin, stdout and stderr: typed lines after a `> ` prompt when stdin
    and stdout are a terminal, else stdin's lines as they come. Returns the exit code."""
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    return Session(model, sys.stdout, sys.stderr).run(typed_lines("> ") if terminal else sys.stdin)

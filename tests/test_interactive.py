"""generate.py --interactive: the command table, the session driven in-process, and the script through a
pipe and through a pseudo-terminal."""

import io
import os
import select
import subprocess
import sys

import pytest

from charlstm import CharLSTMError, interactive, trained_run
from charlstm.generation import Model
from charlstm.interactive import COMMANDS, Session, Settings, parse_command
from tests.conftest import REPO, run_script

# A stuck session fails the test after this long instead of hanging the suite; not a timing assertion.
HANG_GUARD_S = 120
# The child makes the pseudo-terminal its controlling terminal, so a typed Ctrl-C reaches it as SIGINT.
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.fixture(scope="module")
def model(trained_run_folder) -> Model:
    """The session's one-epoch tiny run (sample.length 40, temperatures 0.5 and 1.2), as the script loads it."""
    return Model(trained_run.load(trained_run_folder), prime_in_pieces=True)


@pytest.mark.parametrize("line, parsed", [
    (":temperature 0.7", ("temperature", 0.7)),
    (":temperature 0", ("temperature", 0.0)),
    (":length 300", ("length", 300)),
    (":top_k 5", ("top_k", 5)),
    (":top_p 1", ("top_p", 1.0)),
    (":seed  3 ", ("seed", 3)),
    (":help", ("help", None)),
    (":quit", ("quit", None)),
])
def test_commands_read_their_values(line, parsed):
    assert parse_command(line) == parsed


@pytest.mark.parametrize("line, words", [
    (":temprature 1", ["unknown command :temprature", ":temperature"]),
    (":temperature -1", [":temperature needs a number >= 0", ":temperature 0.7"]),
    (":temperature nan", [":temperature needs"]),
    (":temperature inf", [":temperature needs"]),
    (":temperature", [":temperature needs", "not ''"]),
    (":length 0", [":length needs an integer >= 1", ":length 300"]),
    (":length 2.5", [":length needs an integer"]),
    (":top_k -1", [":top_k needs an integer >= 0"]),
    (":top_p 0", [":top_p needs a number in (0, 1]"]),
    (":top_p 1.5", [":top_p needs"]),
    (":seed -1", [":seed needs an integer in [0, 2**32)"]),
    (":seed 4294967296", [":seed needs"]),
    (":quit now", [":quit takes no value", "type :quit alone"]),
])
def test_bad_commands_are_one_line_naming_the_fix(line, words):
    with pytest.raises(CharLSTMError) as error:
        parse_command(line)
    assert "\n" not in str(error.value) and all(word in str(error.value) for word in words), str(error.value)


def test_help_lists_every_command_and_the_settings_now():
    settings = Settings(temperature=0.25, length=77, top_k=3, top_p=0.5, seed=9)
    text = interactive.help_text(settings)
    assert all(f":{name}" in text for name in COMMANDS)
    assert all(f"now {value}" in text for value in (0.25, 77, 3, 0.5, 9))


class InterruptedOnce(io.StringIO):
    """An output stream whose first write is interrupted, as Ctrl-C during a continuation would be."""

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def write(self, text: str) -> int:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().write(text)


def session_output(model, lines, out=None) -> tuple[int, str, str]:
    """Runs a Session over `lines`; its exit code, continuations and messages."""
    out, messages = out or io.StringIO(), io.StringIO()
    code = Session(model, out, messages).run(lines)
    return code, out.getvalue(), messages.getvalue()


def test_commands_change_the_next_continuation_and_a_bad_one_does_not_end_the_session(model):
    greedy = model.generate("the state of", temperature=0)[0].text
    code, out, messages = session_output(
        model, [":temperature 0\n", "the state of\n", ":top_p 7\n", "\n", ":length 5\n", "the state of\n", ":quit\n",
                "never continued\n"],
    )
    assert code == 0
    assert out == f"{greedy}\n{greedy[:5]}\n"  # A shorter continuation is the start of a longer one.
    errors = [line for line in messages.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and ":top_p" in errors[0]
    assert messages.count("bits per character under the model") == 2


def test_the_run_config_gives_the_first_settings_and_a_seed_repeats_a_continuation(model):
    sample = model.config.sample
    assert Session(model, io.StringIO(), io.StringIO()).settings == Settings(
        sample.temperatures[0], sample.length, sample.top_k, sample.top_p, 0
    )
    seed_0, seed_3 = (model.generate("we", temperature=sample.temperatures[0], seed=s)[0].text for s in (0, 3))
    _, out, _ = session_output(model, ["we", ":seed 3", "we", "we"])
    assert out == f"{seed_0}\n{seed_3}\n{seed_3}\n"


def test_ctrl_c_stops_a_continuation_then_ends_the_session_between_them(model):
    def lines():
        yield "the"
        yield "the"
        raise KeyboardInterrupt  # Ctrl-C while the next line is awaited.

    code, out, messages = session_output(model, lines(), InterruptedOnce())
    assert code == interactive.INTERRUPTED
    assert "stopped" in messages and messages.count("bits per character") == 1
    assert out == "\n" + model.generate("the", temperature=model.config.sample.temperatures[0])[0].text + "\n"


@pytest.mark.slow
def test_through_a_pipe_each_prompt_gives_one_continuation_and_bad_commands_one_error(model, trained_run_folder):
    result = run_script(
        "generate.py", "--workdir", str(trained_run_folder), "--interactive",
        stdin="the state of\n:temperature 0\nour union is\n:temperature hot\nwe the people\n",
    )
    assert result.returncode == 0, result.stderr
    sampled = model.generate("the state of", temperature=model.config.sample.temperatures[0])[0]
    greedy = [model.generate(prompt, temperature=0)[0] for prompt in ("our union is", "we the people")]
    assert result.stdout == "".join(s.text + "\n" for s in [sampled, *greedy])
    assert "> " not in result.stdout  # No prompt string over a pipe.
    messages = result.stderr.splitlines()
    assert [line for line in messages if line.startswith("error: ")] == [
        "error: :temperature needs a number >= 0 (0 = greedy), not 'hot': e.g. :temperature 0.7"
    ]
    bpc = [float(line.split()[0]) for line in messages if "bits per character under the model" in line]
    assert bpc == [pytest.approx(s.bpc, abs=1e-3) for s in [sampled, *greedy]]


class Terminal:
    """The tests' end of a pseudo-terminal: type into it, and read what it shows up to each expected text."""

    def __init__(self, fd: int):
        self.fd, self.shown, self.at = fd, bytearray(), 0

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str) -> str:
        """Reads until `text` shows after the last text expected; what showed up to and including it."""
        while (found := self.shown.find(text.encode(), self.at)) < 0:
            ready, _, _ = select.select([self.fd], [], [], HANG_GUARD_S)
            assert ready, f"{text!r} never showed; after the last expected text came {bytes(self.shown[self.at:])!r}"
            self.shown += os.read(self.fd, 4096)
        shown, self.at = self.shown[self.at : found + len(text)].decode(errors="replace"), found + len(text)
        return shown


@pytest.mark.slow
def test_in_a_terminal_ctrl_c_stops_a_continuation_and_quit_ends_the_session(trained_run_folder):
    fd, child_end = os.openpty()
    script = [str(REPO / "scripts" / "generate.py"), "--workdir", str(trained_run_folder), "--interactive"]
    process = subprocess.Popen(
        [sys.executable, "-c", TAKE_TERMINAL, *script], stdin=child_end, stdout=child_end, stderr=child_end,
        start_new_session=True, env={**os.environ, "TERM": "dumb", "PYTHONUNBUFFERED": "1"},
    )
    os.close(child_end)
    terminal = Terminal(fd)
    try:
        terminal.expect("> ")
        terminal.type("the state of\n")
        assert "bits per character under the model" in terminal.expect("\n> ")
        terminal.type(":length 10000000\nthe\n")  # Far too long to end before the Ctrl-C.
        terminal.expect("the\r\n")
        terminal.expect(" ")  # The continuation has begun.
        terminal.type("\x03")
        terminal.expect("stopped")
        terminal.expect("> ")
        terminal.type(":quit\n")
        assert process.wait(HANG_GUARD_S) == 0
    finally:
        process.kill()
        os.close(fd)

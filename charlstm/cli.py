"""What every script shares: absl flag parsing and user errors as one line with exit code 2."""

import ast
import contextlib
import ctypes
import os
import resource
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from charlstm import checkpoints
from charlstm import config as config_lib
from charlstm.errors import (
    CharLSTMError,
    SaveFailed,
    TrainingDiverged,
    TrainingInterrupted,
)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _one_line(error: Exception) -> str:
    """An exception's message on one line; unwraps the quoted text KeyError adds."""
    text = str(error)
    if text[:1] in "'\"":
        try:
            text = str(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            pass
    return " ".join(text.split()) or type(error).__name__


def _fail_unknown_field(error: Exception) -> None:
    """ml_collections' KeyError or AttributeError for an unknown config field, as one line."""
    _fail(f"unknown config field {_one_line(error)} (all fields: charlstm/default_config.py)")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with flag and config-file errors turned into one line each."""
    try:
        remaining = flags.FLAGS(argv)
        # Files load lazily: a file that failed to load raises its error on the first attribute read.
        if "config" in flags.FLAGS and not hasattr(config := flags.FLAGS["config"].value, "to_dict"):
            _fail(
                f"get_config() of the config file returned {type(config).__name__}, not a ConfigDict: return the config"
            )
        return remaining
    except SyntaxError as e:
        _fail(f"the config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}: fix that line")
    except (KeyError, AttributeError) as e:  # ml_collections' word for an unknown field.
        if "get_config" in str(e):
            _fail(f"the config file defines no get_config() ({_one_line(e)}): define one that returns a ConfigDict")
        _fail_unknown_field(e)
    except OSError as e:
        _fail(f"could not load the config file: {str(e).strip().splitlines()[-1].strip()}")
    except (flags.Error, ValueError, TypeError) as e:
        _fail(_one_line(e))
    except Exception as e:  # noqa: BLE001  (raised by the config file's own code while it loads)
        frame = traceback.extract_tb(e.__traceback__)[-1]
        _fail(
            f"the config file failed to load: {frame.filename}, line {frame.lineno}: {type(e).__name__}: {_one_line(e)}"
        )


def define_config_overrides(base: ml_collections.ConfigDict, help_string: str) -> None:
    """Defines `--config.FIELD=VALUE` flags typed by `base`'s fields, for config_overrides() (no --config itself).

    ml_collections applies a config dict's overrides as it defines the flag, so an
    unknown field fails here, before absl parses: the same one line as in parsing.
    """
    try:
        config_flags.DEFINE_config_dict("config", base, help_string)
    except (KeyError, AttributeError) as e:
        _fail_unknown_field(e)


class _ConfigSourceParser(flags.ArgumentParser):
    """Parses --config: a config file's get_config() (by ml_collections' parser, `file_parser`), or the
    config a run folder (or its config.json) saved."""

    def __init__(self, file_parser: flags.ArgumentParser):
        self.file_parser = file_parser

    def flag_type(self) -> str:
        return self.file_parser.flag_type()

    def parse(self, path: str):
        if not config_lib.is_saved(path):
            return self.file_parser.parse(path)
        try:
            config = config_lib.from_saved(path)
        except CharLSTMError as e:
            raise ValueError(str(e)) from None  # absl reports a parser's ValueError as one line.
        config.lock()  # As a config file's: an override of an unknown field is an error.
        return config


def define_config_source(help_string: str) -> flags.FlagHolder:
    """Defines --config as a config file, a run folder or a run's config.json, with `--config.FIELD=VALUE`
    overrides on top (they are typed by the loaded config)."""
    holder = config_flags.DEFINE_config_file("config", None, help_string)
    flags.FLAGS["config"].parser = _ConfigSourceParser(flags.FLAGS["config"].parser)
    return holder


def config_overrides() -> dict:
    """The parsed `--config.FIELD=VALUE` overrides, e.g. {'sample.top_k': 5}."""
    return config_flags.get_override_values(flags.FLAGS["config"])


def config_name(config_flag: str = "config") -> str:
    """The stem of the config file given to `--config`, e.g. 'obama'; refuses a run's saved config, whose
    name would be that run's own folder."""
    path = config_flags.get_config_filename(flags.FLAGS[config_flag])
    if config_lib.is_saved(path):
        raise CharLSTMError(
            f"--{config_flag} {path} is a run's saved config: give --workdir for the new run "
            "(the run's own folder resumes it)"
        )
    return Path(path).stem


def write_file(path: str, text: str, flag: str) -> None:
    """Writes `text` to `path`, creating its folder; failing is a user error that names `--flag`."""
    with open_output(path, flag) as out:
        out.write(text)


@contextlib.contextmanager
def open_output(path: str, flag: str) -> Iterator[TextIO]:
    """`path` opened for writing as text, its folder created; failing to make, open or write it is a user
    error that names `--flag`."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            yield out
    except OSError as e:
        raise CharLSTMError(f"could not write --{flag}={path}: {e.strerror}: give a writable file path") from None


# glibc mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8


def keep_freed_memory() -> None:
    """Has glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    XLA:CPU allocates and frees the same large buffers every train step; by default glibc
    maps them fresh and unmaps them on free, so each step page-faults them in again. One
    arena, no mmap and little trimming reuse them: configs/obama.py epochs train 1.4-1.7x
    faster on 2 cores, for about 0.4 GiB more peak RSS (1.2 instead of 0.8 GiB).
    CHARLSTM_MALLOC=default turns this off. No-op without glibc.
    """
    if os.environ.get("CHARLSTM_MALLOC") == "default":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for parameter, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**28), (M_TOP_PAD, 2**26)):
        mallopt(parameter, value)


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (benchmarks report it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB.


def run(main: Callable[[], None], arguments_hint: str) -> None:
    """Runs a script that takes flags only: positional arguments are an error that says `arguments_hint`."""

    def flags_only(arguments: list[str]) -> None:
        if arguments:
            raise CharLSTMError(f"unexpected arguments {arguments}: {arguments_hint}")
        main()

    run_with_arguments(flags_only)


def run_with_arguments(main: Callable[[list[str]], None]) -> None:
    """Runs a script's `main(positional arguments)` under absl, after keep_freed_memory() (before JAX
    allocates anything) and with Orbax's log lines kept off the terminal unless --verbosity is given
    (checkpoints.quiet_library_logs). CharLSTMError becomes `error: ...` on stderr and exit code 2."""

    def guarded(argv: list[str]) -> None:
        verbose = flags.FLAGS["verbosity"].present
        if not verbose:
            logging.set_verbosity(logging.WARNING)  # JAX's and Orbax's info lines are noise here.
        checkpoints.quiet_library_logs(verbose)
        try:
            main(argv[1:])
        except CharLSTMError as e:
            _fail(str(e))
        except TrainingDiverged as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except SaveFailed as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(3)
        except TrainingInterrupted as e:
            print(str(e), file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            print("interrupted before training started; nothing was saved", file=sys.stderr)
            sys.exit(130)

    keep_freed_memory()
    app.run(guarded, flags_parser=_parse_flags)

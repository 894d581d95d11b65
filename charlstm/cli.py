"""What every script shares: absl flag parsing and user errors as one line with exit code 2."""

import ast
import sys
from collections.abc import Callable
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from charlstm.errors import CharLSTMError, TrainingDiverged, TrainingInterrupted


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


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with flag and config-file errors turned into one line each."""
    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS["config"].value.to_dict()  # Files load lazily: load it now.
        return remaining
    except (KeyError, AttributeError) as e:  # ml_collections' word for an unknown field.
        _fail(f"unknown config field {_one_line(e)} (all fields: configs/default.py)")
    except OSError as e:
        _fail(f"could not load the config file: {str(e).strip().splitlines()[-1].strip()}")
    except (flags.Error, ValueError, TypeError) as e:
        _fail(_one_line(e))


def config_name(config_flag: str = "config") -> str:
    """The stem of the config file given to `--config`, e.g. 'obama'."""
    return Path(config_flags.get_config_filename(flags.FLAGS[config_flag])).stem


def run(main: Callable[[list[str]], None]) -> None:
    """Runs `main` under absl; CharLSTMError becomes `error: ...` on stderr and exit code 2."""

    def guarded(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # JAX's and Orbax's info lines are noise here.
        try:
            main(argv)
        except CharLSTMError as e:
            _fail(str(e))
        except TrainingDiverged as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except TrainingInterrupted as e:
            print(str(e), file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            print("interrupted before training started; nothing was saved", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, flags_parser=_parse_flags)

"""Re-runs a run folder from what it recorded and says how close the numbers came.

    python scripts/reproduce.py runs/obama                    # all its epochs, in runs/obama_repro
    python scripts/reproduce.py runs/obama --epochs 3 --workdir /tmp/obama_3

Prints one verdict: identical (bit for bit), within tolerance (the largest difference, and the
tolerance: float32 rounding or the number's standard error on the run's validation text) or diverged
(the first epoch and field beyond it), and what differed in the environment (packages, CPU, threads,
kernel build, LSTM implementation). --epochs N trains only the first N epochs, with the run's own
schedule. Exit code 0 when identical or within tolerance, 1 when diverged, 2 on bad input; the
original folder is only read.
"""

import contextlib
import json
import shlex
import sys

from absl import flags

from charlstm import cli, reproduce
from charlstm.errors import CharLSTMError

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the reproduction (new or empty); default RUN_repro.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Reproduce only the first N epochs; default all the run trained.")
_JSON = flags.DEFINE_bool("json", False, "Print the report as one JSON object (training's output goes to stderr).")


def main(arguments: list[str]) -> None:
    if len(arguments) != 1:
        raise CharLSTMError(f"give one run folder, not {arguments}: python scripts/reproduce.py RUN [--epochs N]")
    run = arguments[0].rstrip("/")
    command = " ".join(shlex.quote(arg) for arg in sys.argv)
    with contextlib.redirect_stdout(sys.stderr) if _JSON.value else contextlib.nullcontext():
        report = reproduce.reproduce(run, _WORKDIR.value or f"{run}_repro", _EPOCHS.value, command)
    print(json.dumps(report) if _JSON.value else reproduce.describe(report))
    sys.exit(reproduce.exit_code(report))


if __name__ == "__main__":
    cli.run_with_arguments(main)

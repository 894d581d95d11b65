"""Compares run folders: the leaderboard table (best val_bpc first) and their curves in one PNG.

    python scripts/compare.py runs/obama runs/units256
    python scripts/compare.py runs/sweep1/* --plot runs/sweep1_curves.png
    python scripts/compare.py runs/*

A sweep folder (scripts/sweep.py) stands for its runs; a file or a folder that holds no run is
skipped with a note on stderr. The table's columns are the run, the config fields whose values
differ between the runs, the best val_bpc and its epoch, the epochs trained, the training seconds
and the best epoch's sample at the lowest temperature.
"""

import sys
from pathlib import Path

from absl import flags

from charlstm import cli, reports, sweep
from charlstm.errors import CharLSTMError

_PLOT = flags.DEFINE_string("plot", "compare.png", "Where to write the overlaid curves (PNG).")


def main(run_folders: list[str]) -> None:
    if not run_folders:
        raise CharLSTMError("no run folders given: python scripts/compare.py RUN_FOLDER [RUN_FOLDER ...]")
    plot = _PLOT.value
    runs, skipped = sweep.expand_runs(run_folders)
    for reason in skipped:
        print(f"note: {reason}: skipped", file=sys.stderr)
    rows = reports.compare_runs(runs, Path(plot))
    print(f"{reports.leaderboard_markdown(rows)}\ncurves: {plot}")


if __name__ == "__main__":
    cli.run_with_arguments(main)

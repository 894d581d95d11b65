"""Compares run folders: the leaderboard table (best val_bpc first) and their curves in one PNG.

    python scripts/compare.py runs/obama runs/units256
    python scripts/compare.py runs/sweep1/* --plot runs/sweep1_curves.png

The table's columns are the run, the config fields whose values differ between the runs, the best
val_bpc and its epoch, the epochs trained, the training seconds and the best epoch's sample at the lowest temperature.
"""

from pathlib import Path

from absl import flags

from charlstm import cli, reports
from charlstm.errors import CharLSTMError

_PLOT = flags.DEFINE_string("plot", "compare.png", "Where to write the overlaid curves (PNG).")


def main(run_folders: list[str]) -> None:
    if not run_folders:
        raise CharLSTMError("no run folders given: python scripts/compare.py RUN_FOLDER [RUN_FOLDER ...]")
    rows = reports.compare_runs([Path(folder) for folder in run_folders], Path(_PLOT.value))
    print(f"{reports.leaderboard_markdown(rows)}\ncurves: {_PLOT.value}")


if __name__ == "__main__":
    cli.run_with_arguments(main)

"""Trains every combination of a grid of config values, one run folder each, and ranks them.

    python scripts/sweep.py --config configs/obama.py --workdir runs/sweep1 \\
        --grid model.units=64,128,256 --grid model.dropout=0.0,0.3

Each combination trains in <workdir>/<its overrides>, e.g. runs/sweep1/model.units=64,model.dropout=0.3;
--config.FIELD=VALUE overrides apply to every run. <workdir> gets leaderboard.md, leaderboard.csv and
validation_curves.png. Re-running the same command skips finished runs and resumes an unfinished one.
"""

import shlex
import sys

from absl import flags
from ml_collections import config_flags

from charlstm import cli, reports, sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/obama.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder: one run folder per combination, and the leaderboard.")
_GRID = flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,...: values of a config field to try; repeat per field.")
flags.mark_flags_as_required(["config", "workdir"])


def main() -> None:
    grid = sweep.parse_grid(_GRID.value, _CONFIG.value)
    rows = sweep.run_sweep(_CONFIG.value, grid, _WORKDIR.value, shlex.join(sys.argv))
    print(f"\n{reports.leaderboard_markdown(rows)}\nleaderboard and curves in {_WORKDIR.value}/")


if __name__ == "__main__":
    cli.run(main, "pass grids as --grid FIELD=V1,V2")

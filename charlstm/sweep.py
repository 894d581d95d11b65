"""Grids of config values: `FIELD=V1,V2` parsed against a config, one run folder per combination.

A sweep folder holds one run folder per combination, named after its
overrides, plus leaderboard.md, leaderboard.csv and validation_curves.png;
re-running a sweep skips finished runs and resumes an unfinished one.
"""

import ast
import itertools
import re
from pathlib import Path

import ml_collections

from charlstm import config as config_lib
from charlstm import reports
from charlstm.errors import CharLSTMError
from charlstm.run_folder import RunFolder
from charlstm.stopping import patience_ran_out
from charlstm.train import train_and_evaluate

LEADERBOARD_MD, LEADERBOARD_CSV, CURVES_PNG = "leaderboard.md", "leaderboard.csv", "validation_curves.png"


def split_values(text: str) -> list[str]:
    """`text` split at the commas outside brackets: '(0.5,1.0),(1.2,)' -> ['(0.5,1.0)', '(1.2,)']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def field_value(config: ml_collections.ConfigDict, field: str):
    """The current value of a dotted config field; CharLSTMError if there is no such field."""
    try:
        node = config_lib.get_field(config, field)
    except KeyError:
        raise CharLSTMError(
            f"unknown config field {field!r} in --grid: use a field of charlstm/default_config.py, e.g. model.units"
        ) from None
    if isinstance(node, ml_collections.ConfigDict):
        raise CharLSTMError(
            f"--grid {field!r} is a section, not a field: name one of its fields, e.g. {field}.{next(iter(node))}"
        )
    return node


def _literal_tuple(text: str, current: tuple):
    """`text` as a tuple like `current` (numbers stay numbers), or None if it is not one."""
    value = ast.literal_eval(text)
    if not isinstance(value, (tuple, list)):
        return None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in current)
    if numbers and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return tuple(value)


# What to write for a field of each type that a grid can sweep.
_EXPECTED = {
    bool: "true or false", int: "an integer", float: "a number", str: "text", tuple: "a tuple such as (0.5,1.2)"
}


def parse_value(field: str, text: str, current):
    """`text` as a value of the type `field` has now (bool, int, float, str or tuple)."""
    kind = type(current)
    if kind not in _EXPECTED:
        raise CharLSTMError(f"--grid {field}: a {kind.__name__} field cannot be swept: set it with --config.{field}")
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.strip().lower()]
        if kind is not tuple:
            return kind(text)
        if (value := _literal_tuple(text, current)) is not None:
            return value
    except (KeyError, ValueError, SyntaxError):
        pass
    raise CharLSTMError(
        f"--grid {field}: value {text!r} is not a valid {kind.__name__} (now {current!r}): give {_EXPECTED[kind]}"
    )


def parse_grid(specs: list[str], config: ml_collections.ConfigDict) -> dict[str, list]:
    """`['model.units=64,128', ...]` as {field: [values]}, each value of its field's type."""
    if not specs:
        raise CharLSTMError("no --grid given: pass at least one, e.g. --grid model.units=64,128")
    grid = {}
    for spec in specs:
        field, sep, values = spec.partition("=")
        if not sep or not values:
            raise CharLSTMError(f"--grid {spec!r} is not FIELD=V1,V2,...: write e.g. --grid model.units=64,128")
        if field in grid:
            raise CharLSTMError(f"--grid {field} is given twice: list all its values in one --grid")
        current = field_value(config, field)
        grid[field] = [parse_value(field, text, current) for text in split_values(values)]
    return grid


def _name_part(value) -> str:
    return "_".join(map(str, value)) if isinstance(value, tuple) else str(value)


def run_name(overrides: dict) -> str:
    """A safe folder name from the overrides, e.g. 'model.units=64,train.learning_rate=0.01'."""
    name = ",".join(f"{field}={_name_part(value)}" for field, value in overrides.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def with_overrides(base: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """A validated copy of `base` with the dotted fields set."""
    config = base.copy_and_resolve_references()
    config.update_from_flattened_dict(overrides)
    config_lib.validate(config)
    return config


def plan(base: ml_collections.ConfigDict, grid: dict[str, list]) -> dict[str, ml_collections.ConfigDict]:
    """Every combination of the grid as {run folder name: validated config}, in grid order."""
    runs = {}
    for values in itertools.product(*grid.values()):
        overrides = dict(zip(grid, values))
        name = run_name(overrides)
        if name in runs:
            raise CharLSTMError(f"two --grid combinations give the run folder name {name!r}: make the values distinct")
        runs[name] = with_overrides(base, overrides)
    return runs


def is_finished(workdir: Path, config: ml_collections.ConfigDict) -> bool:
    """Whether the run in `workdir` trained all config.train.epochs, or stopped early for its patience."""
    metrics = RunFolder(workdir).read_metrics() if workdir.exists() else []
    if not metrics:
        return False
    return metrics[-1]["epoch"] >= config.train.epochs or patience_ran_out(
        [m["val_loss"] for m in metrics], config.train.patience
    )


def is_sweep_folder(path: Path) -> bool:
    """Whether `path` is a sweep folder: not a run itself, but holding a leaderboard or run folders."""
    if not path.is_dir() or reports.not_a_run(path) is None:
        return False
    return (path / LEADERBOARD_MD).is_file() or any(reports.not_a_run(child) is None for child in path.iterdir())


def expand_runs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The run folders among `paths`, each sweep folder replaced by its runs (by name), once each, and a
    line saying why for each path skipped (a file, a folder that holds no run); refuses when none is left."""
    runs, skipped = {}, []
    for path in map(Path, paths):
        if is_sweep_folder(path):
            inside = [child for child in sorted(path.iterdir()) if child.is_dir()]
        else:
            inside = [path]
        for candidate in inside:
            if reason := reports.not_a_run(candidate):
                skipped.append(reason)
            else:
                runs.setdefault(candidate.resolve(), candidate)
    if not runs:
        raise CharLSTMError(f"{'; '.join(skipped)}: give folders written by scripts/train.py or scripts/sweep.py")
    return list(runs.values()), skipped


def write_leaderboard(sweep_dir: Path, run_dirs: list[Path]) -> list[dict]:
    """leaderboard.md, leaderboard.csv and validation_curves.png of the runs; returns the rows."""
    rows = reports.compare_runs(run_dirs, sweep_dir / CURVES_PNG)
    (sweep_dir / LEADERBOARD_MD).write_text(
        f"# Leaderboard of {sweep_dir.name}\n\nSorted by best val_bpc (bits per validation character); "
        "train seconds sum all epochs; the sample is the best epoch's at its lowest temperature.\n\n"
        f"{reports.leaderboard_markdown(rows)}\n![validation curves]({CURVES_PNG})\n"
    )
    (sweep_dir / LEADERBOARD_CSV).write_text(reports.table_csv(rows))
    return rows


def run_sweep(
    base: ml_collections.ConfigDict, grid: dict[str, list], workdir: str | Path, command: str = ""
) -> list[dict]:
    """Trains each combination in its folder under `workdir`, one after another, skipping finished
    runs; rewrites the leaderboard after each run. Returns the final leaderboard rows."""
    sweep_dir = Path(workdir)
    runs = plan(base, grid)
    done = []
    for i, (name, config) in enumerate(runs.items(), 1):
        path = sweep_dir / name
        if is_finished(path, config):
            print(f"[{i}/{len(runs)}] {name}: finished, skipped")
        else:
            print(f"[{i}/{len(runs)}] {name}: training")
            train_and_evaluate(config, path, command)
        done.append(path)
        rows = write_leaderboard(sweep_dir, done)
    return rows

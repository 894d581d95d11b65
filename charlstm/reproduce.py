"""Re-running a run folder from what it recorded, and how close the numbers came (scripts/reproduce.py).

The reproduction trains in a folder of its own with the config of the run's newest checkpoint (the
source of truth; config.json is for people), on the same corpus file (its SHA-256 as run_info.jsonl
recorded it), with the same seed and LSTM choice; the original folder is only read. It may stop after
the first N epochs (train.stop_after_epoch), the schedule still spanning the run's train.epochs, so a
cosine schedule gives the same numbers. Then every number of metrics.jsonl but the timings, and the
weights when the original kept a checkpoint of that step, are compared epoch by epoch.

A number further from the original's than its tolerance (charlstm.tolerance: the larger of what float32
rounding grows to and the number's standard error) diverged. The weights decide only identical or not.
The numbers of the epochs' samples (novelty) are exact counts of another kind: a rounding difference
changes sampled characters, so they are compared exactly, and only while the losses are identical.
"""

import itertools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from charlstm import config as config_lib
from charlstm import novelty, tolerance, train, trained_run
from charlstm.checkpoints import first_line, steps_on_disk
from charlstm.errors import CharLSTMError
from charlstm.run_folder import RunFolder, flatten, refuse_file

TIMINGS = ("seconds", "val_seconds", "chars_per_second")  # metrics.jsonl fields that time the run.
SAMPLE_FIELDS = tuple(novelty.epoch_summary([], None))  # metrics.jsonl fields counted on the epoch's samples.
# run_info.jsonl fields that differ between any two starts, or say where the weights started (init_from).
NOT_ENVIRONMENT = ("started", "command", "init_from")


def read_original(path: Path) -> tuple[ml_collections.ConfigDict, list[dict]]:
    """The run's config (from its newest checkpoint) and metrics; CharLSTMError naming what is missing
    when `path` is not a run that finished an epoch."""
    folder = RunFolder.open(path)
    if not folder.read_run_info():
        raise CharLSTMError(f"{str(path)!r} is not a run folder (no run_info.jsonl): give a folder train.py trained")
    if not (metrics := folder.read_metrics()):
        raise CharLSTMError(f"run {str(path)!r} has no metrics.jsonl: train it until an epoch ends, then reproduce it")
    steps = steps_on_disk(path / "checkpoints")
    if not steps:
        raise CharLSTMError(f"run {str(path)!r} has no checkpoint (it holds the config): train it until an epoch ends")
    try:
        saved = folder.checkpoints.restore_meta(steps[-1]).config
    except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises.
        raise CharLSTMError(f"the newest checkpoint of {str(path)!r} does not load ({first_line(e)})") from None
    return config_lib.with_defaults(saved), metrics


def check_workdir(workdir: Path, original: Path) -> None:
    """Refuses the original's folder (or one inside it) and an existing folder that is not empty."""
    refuse_file(workdir)
    if workdir.resolve() == original.resolve() or original.resolve() in workdir.resolve().parents:
        raise CharLSTMError(
            f"--workdir {str(workdir)!r} is in the original run's folder: a reproduction never writes there; "
            "give a new folder"
        )
    if workdir.is_dir() and any(workdir.iterdir()):
        raise CharLSTMError(f"--workdir {str(workdir)!r} exists and is not empty: give a new folder or remove it")


def reproduction_config(config: ml_collections.ConfigDict, epochs: int, trained: int) -> ml_collections.ConfigDict:
    """The original's config stopping after `epochs` of the `trained` ones, its schedule unchanged; a
    shortened run skips the final scoring, which it would do on another best checkpoint."""
    if not 1 <= epochs <= trained:
        raise CharLSTMError(f"--epochs {epochs} is invalid: the run trained {trained} epochs; give 1 to {trained}")
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.stop_after_epoch = epochs if epochs < config.train.epochs else 0
    if epochs < trained:
        config.eval.final_protocols = ()
    config_lib.validate(config)
    return config


def reproduce(original: str | Path, workdir: str | Path, epochs: int | None = None, command: str = "") -> dict:
    """Trains run `original` again in `workdir` for its first `epochs` (None: all it trained) and returns
    the comparison (see `compare`); refuses bad input before writing anything."""
    original, workdir = Path(original), Path(workdir)
    config, metrics = read_original(original)
    epochs = len(metrics) if epochs is None else epochs
    config = reproduction_config(config, epochs, len(metrics))
    check_workdir(workdir, original)
    resolution = tolerance.measure(original)  # Refuses a corpus that changed since training.
    train.train_and_evaluate(config, workdir, command)
    return compare(original, workdir, epochs, resolution)


def compare(original: Path, reproduction: Path, epochs: int, resolution: tolerance.Resolution) -> dict:
    """The verdict on the first `epochs` epochs of two runs: 'identical' (bit for bit), 'within
    tolerance' or 'diverged' (beyond rounding and `resolution`, the original's), with the largest and
    the first difference, the weights' comparison, the samples' and what differed in the environment."""
    runs = RunFolder.open(original), RunFolder.open(reproduction)
    first, second = (run.read_metrics()[:epochs] for run in runs)
    weights = weight_difference(original, reproduction, first[-1]["step"])
    return {
        **judge(metric_differences(first, second, resolution), weights),
        "original": str(original), "reproduction": str(reproduction),
        "epochs": epochs, "original_epochs": len(runs[0].read_metrics()),
        "weights": weights, "tolerance": tolerance.RULE, "resolution": resolution.to_json(),
        "environment_differences": environment_differences(runs[0].read_run_info()[-1], runs[1].read_run_info()[-1]),
    }


def judge(differences: list[dict], weights: dict) -> dict:
    """The verdict on metric_differences() and weight_difference(): 'diverged' when a number of
    metrics.jsonl is beyond its tolerance, 'within tolerance' when one of them or the weights differ,
    else 'identical'; the samples' numbers count only while every loss and the weights are identical.
    The weights decide identical or not, never diverged: two trainings that rounded differently drift
    apart in weight space while their losses stay within what the text resolves (configs/obama.py on one
    thread instead of two: weights 12 apart in norm out of 207 after 30 epochs, val_bpc 2e-4). With the
    first difference beyond the tolerance, the largest (against its tolerance), the first, and the first
    epoch whose samples differ."""
    numbers = differences + ([weights] if weights["difference"] is not None else [])
    losses_identical = all(d["difference"] == 0 for d in numbers if d["field"] not in SAMPLE_FIELDS)
    counted = [d for d in numbers if d["field"] not in SAMPLE_FIELDS or losses_identical]
    beyond = [d for d in counted if d["difference"] > d["tolerance"] and d["field"] != "weights"]
    differing = [d for d in counted if d["difference"] != 0]
    samples = [d for d in differences if d["field"] in SAMPLE_FIELDS and d["difference"] != 0]
    return {
        "verdict": "diverged" if beyond else "within tolerance" if differing else "identical",
        "diverged_at": beyond[0] if beyond else None,
        "largest_difference": max((d for d in differing if d["field"] != "weights"),
                                  key=lambda d: d["difference"] / max(d["tolerance"], tolerance.EPS32), default=None),
        "first_difference": differing[0] if differing else None,
        "samples_differ_from_epoch": samples[0]["epoch"] if samples else None,
    }


def metric_differences(first: list[dict], second: list[dict], resolution: tolerance.Resolution) -> list[dict]:
    """Per epoch of `first` and field (timings aside), in order: both values, their difference and its
    tolerance (rounding or `resolution`); a difference of inf where the two are not numbers and differ (None
    against a number, other text, an epoch that `second` did not reach: early stopping where the original went on)."""
    found = []
    for a, b in itertools.zip_longest(first, second[: len(first)], fillvalue={}):
        for field in sorted((a.keys() | b.keys()) - set(TIMINGS), key=lambda f: (f in SAMPLE_FIELDS, f)):
            x, y = a.get(field), b.get(field)
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
            exact = not numbers or isinstance(x, int) or field in SAMPLE_FIELDS
            difference = abs(x - y) if numbers else (0.0 if x == y else float("inf"))
            found.append({
                "epoch": a["epoch"], "field": field, "original": x, "reproduction": y, "difference": difference,
                "tolerance": 0.0 if exact else resolution.tolerance(field, x, a["step"]),
            })
    return found


def weight_difference(original: Path, reproduction: Path, step: int) -> dict:
    """The L2 norm of the difference of the two runs' weights at `step` (all arrays as one vector), the
    original's norm and its rounding tolerance (one coordinate alone can move far more, where Adam divides a
    tiny gradient by its tiny scale); 'why' instead when the original kept no checkpoint of that step (it
    keeps the best and the latest two)."""
    for name, folder in (("original", original), ("reproduction", reproduction)):
        if step not in RunFolder.open(folder).checkpoints.complete_steps():
            return {"epoch": None, "field": "weights", "step": step, "difference": None,
                    "why": f"the {name} kept no checkpoint of step {step}"}
    a, b = ([np.asarray(x, np.float64) for x in jax.tree.leaves(trained_run.load(folder, str(step)).params)]
            for folder in (original, reproduction))
    difference = float(np.sqrt(sum(np.square(x - y).sum() for x, y in zip(a, b, strict=True))))
    norm = float(np.sqrt(sum(np.square(x).sum() for x in a)))
    epoch = next(m["epoch"] for m in RunFolder.open(original).read_metrics() if m["step"] == step)
    return {"epoch": epoch, "field": "weights", "step": step, "original": norm, "reproduction": None,
            "difference": difference, "tolerance": tolerance.rounding(norm, step)}


def environment_differences(original: dict, reproduction: dict) -> list[str]:
    """run_info.jsonl fields (NOT_ENVIRONMENT aside) whose values differ, as 'field: A -> B', or for
    lists that share items (CPU features), the items only one side has."""
    original, reproduction = ({k: v for k, v in r.items() if k not in NOT_ENVIRONMENT}
                              for r in (original, reproduction))
    lines = [
        f"not recorded by the {side}: {', '.join(sorted(missing))}"
        for side, missing in (("original", reproduction.keys() - original.keys()),
                              ("reproduction", original.keys() - reproduction.keys())) if missing
    ]
    shared = original.keys() & reproduction.keys()
    a, b = (flatten({k: v for k, v in record.items() if k in shared}) for record in (original, reproduction))
    for field in sorted(a.keys() | b.keys()):
        x, y = a.get(field, "not recorded"), b.get(field, "not recorded")
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list) and set(map(str, x)) & set(map(str, y)):
            only = json.dumps([v for v in x if v not in y]), json.dumps([v for v in y if v not in x])
            lines.append(f"{field}: only the original has {only[0]}, only the reproduction {only[1]}")
        else:
            lines.append(f"{field}: {json.dumps(x)} -> {json.dumps(y)}")
    return lines


def describe(report: dict) -> str:
    """The report as lines for a person: the verdict, the differences that decided it, the environment's."""
    lines = [
        f"reproduced {report['epochs']} of the {report['original_epochs']} epochs of {report['original']} "
        f"in {report['reproduction']}: {report['verdict']}"
    ]
    for label, key in (("diverged at", "diverged_at"), ("largest difference", "largest_difference"),
                       ("first difference", "first_difference")):
        if (d := report[key]) is not None and not (key == "first_difference" and d == report["largest_difference"]):
            lines.append(f"  {label}: {describe_difference(d)}")
    weights = report["weights"]
    if weights["difference"] is None:
        lines.append(f"  weights not compared: {weights['why']}")
    elif weights["difference"] == 0:
        lines.append(f"  weights at step {weights['step']}: identical")
    if report["samples_differ_from_epoch"] is not None:
        lines.append(
            f"  samples differ from epoch {report['samples_differ_from_epoch']}"
            + ("" if report["verdict"] == "identical" else " (sampling turns rounding into other characters)")
        )
    if report["verdict"] != "identical":
        lines.append(f"  tolerance: {report['tolerance']},\n    {describe_resolution(report['resolution'])}")
    changed = report["environment_differences"]
    lines.append("environment differences (original -> reproduction):" if changed else "environment: no differences")
    lines += [f"  {line}" for line in changed]
    return "\n".join(lines)


def describe_resolution(resolution: dict) -> str:
    """Where the standard errors come from: the spread of the per-character NLL and the characters averaged."""
    errors = resolution["standard_errors"]
    return (
        f"derived from the original's best checkpoint (step {resolution['step']}, {resolution['protocol']}): "
        f"per-character NLL std {resolution['nll_std']:.4g} nats\n"
        f"    / sqrt({resolution['val_chars']:,} characters scored) = {errors['val_loss']:.3g} nats for val_loss "
        f"({errors['val_bpc']:.3g} bits for val_bpc),\n"
        f"    / sqrt({resolution['train_chars']:,} characters trained per epoch) = {errors['train_loss']:.3g} nats "
        "for train_loss"
    )


def describe_difference(d: dict) -> str:
    """One difference: where, both values, by how much against the tolerance."""
    if d["field"] == "weights":
        where = f"weights at step {d['step']} (norm {d['original']:.4g}): their difference's norm"
    else:
        where = f"{d['field']} at epoch {d['epoch']} ({d['original']!r} -> {d['reproduction']!r}): off by"
    return f"{where} {d['difference']:.3g}, tolerance {d['tolerance']:.3g}"


def exit_code(report: dict) -> int:
    """0 when identical or within tolerance, 1 when diverged."""
    return 1 if report["verdict"] == "diverged" else 0

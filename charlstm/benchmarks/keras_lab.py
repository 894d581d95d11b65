"""The Keras lab's model trained the lab's way (scripts/benchmark_keras_lab.py, run by a Python that
has TensorFlow, in a child process), in rounds, each right after a round of our step."""

import json
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from charlstm.benchmarks.timing import WARMUP_STEPS, interleaved_steps
from charlstm.errors import CharLSTMError

# Rounds of our step, each followed by the Keras lab's.
KERAS_ROUNDS = 3


def keras_lab_command(python: str, script: str | Path, config: ml_collections.ConfigDict, steps: int) -> list[str]:
    """The command that has `python` run `script` (benchmark_keras_lab.py) for `steps` timed steps in
    `config`'s shapes; a user error when `python` is no executable or `config` is not the lab's kind
    of model (configs/obama_lab.py is)."""
    m = config.model
    if shutil.which(python) is None:
        raise CharLSTMError(f"--keras_python={python} is not an executable: give a Python that has TensorFlow")
    if (m.cell, m.num_layers, m.embed_dim, config.train.objective) != ("lstm", 1, 0, "last"):
        raise CharLSTMError("--keras_python times the lab's one-hot one-layer LSTM with one target per window: "
                            "use --config configs/obama_lab.py")
    return [python, str(script), "--json",
            f"--batch_size={config.train.batch_size}", f"--seq_length={config.data.seq_length}",
            f"--units={m.units}", f"--train_steps={steps}", f"--warmup_steps={WARMUP_STEPS}"]


def keras_lab_in_turns(ours: Callable[[int], Any], command: list[str], steps: int) -> dict:
    """KERAS_ROUNDS rounds of our step's median seconds over `steps` steps (interleaved_steps), each followed
    by the Keras lab's (`command`'s report): both per round, the lab's over ours per round and the median
    of those ratios."""
    ours_seconds, keras_seconds = {}, {}
    for i in range(1, KERAS_ROUNDS + 1):
        ours_seconds[f"round_{i}"] = interleaved_steps({"default": ours}, steps)["default"]["seconds"]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise CharLSTMError(f"{' '.join(command[:2])} failed: {(child.stderr.strip().splitlines() or ['?'])[-1]}")
        report = json.loads(child.stdout.strip().splitlines()[-1])
        keras_seconds[f"round_{i}"] = report["keras_train_step_seconds"]
    ratios = {name: keras_seconds[name] / ours_seconds[name] for name in ours_seconds}
    return {"keras_lab_versions": f"tensorflow {report['tensorflow']}, keras {report['keras']}",
            "train_step_seconds_beside_keras": ours_seconds, "keras_lab_train_step_seconds": keras_seconds,
            "keras_lab_over_default": ratios, "keras_lab_over_default_median": statistics.median(ratios.values())}

"""Shared fixtures: the tiny config with its corpus built once per session outside the repo."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from charlstm import config as config_lib
from charlstm import data, train
from charlstm.ngram import KneserNey

REPO = Path(__file__).resolve().parents[1]

# Tests compare implementations to 1e-5: on GPUs with TF32, XLA's and cuDNN's float32 matmuls would
# otherwise round to 10 bits. No effect on a CPU.
jax.config.update("jax_default_matmul_precision", "highest")


# metrics.jsonl fields that time the run: the only ones that differ between identical runs.
TIMINGS = ("seconds", "val_seconds", "chars_per_second")


def without_timing(metrics: list[dict]) -> list[dict]:
    """Epoch records without their TIMINGS, to compare runs."""
    return [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics]


def vocab_of(text: str) -> data.Vocab:
    """The vocabulary of `text`: its unique characters, sorted, as load_corpus builds it."""
    return data.Vocab("".join(sorted(set(text))))


def ngram_probabilities(model: KneserNey, context) -> np.ndarray:
    """`model`'s next-character distribution `[V]` after `context` (at least order - 1 ids), read off
    its per_char_nll one candidate character at a time."""
    context = list(context)
    nll = [model.per_char_nll(np.asarray(context + [v]), len(context))[0] for v in range(model.vocab_size)]
    return np.exp(-np.asarray(nll))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(data_dir):
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    return config


@pytest.fixture(scope="session")
def trained_run_folder(tmp_path_factory, data_dir) -> Path:
    """A run folder of configs/tiny.py trained for one epoch, once per session, for tests that only read it."""
    config = config_lib.from_file(REPO / "configs" / "tiny.py")
    config.data.dir = str(data_dir)
    config.train.epochs = 1
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train_and_evaluate(config, workdir)
    return workdir


def run_script(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs scripts/<script> in a subprocess, as a user would, and captures its output."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=600,
    )


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes, to show that a refused command changed nothing there."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """A script's user error: exit code 2 and one `error: ...` line on stderr that has each of `words`."""
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]

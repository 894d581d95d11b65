"""A non-editable install: the package alone (no checkout, no configs/) loads a run and generates from it,
and loading a run imports nothing of training, plotting or TensorBoard."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

TRAINING_MODULES = (
    "charlstm.train", "charlstm.loop", "charlstm.train_step", "charlstm.reports", "matplotlib", "tensorboardX", "tqdm"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding the package as `pip install .` (a wheel, no sources) puts it, built from a copy
    of the checkout's files so that the build leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("install")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / "source" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / "source" / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "wheels", root / "source"],
                   check=True, capture_output=True)
    wheel = next((root / "wheels").glob("charlstm-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", root / "site", wheel], check=True, capture_output=True)
    return root / "site"


def test_every_package_folder_is_packaged():
    """pyproject lists packages by hand: a subpackage missing there works in a checkout and is absent
    from a wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "charlstm").rglob("__init__.py")}
    assert listed == folders


def run_outside_the_checkout(installed: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_an_installed_package_loads_a_run_without_training_code(installed, trained_run_folder, tmp_path):
    program = f"""
import sys
import charlstm, charlstm.trained_run, charlstm.sampling
assert charlstm.__file__.startswith({str(installed)!r}), charlstm.__file__
run = charlstm.trained_run.load({str(trained_run_folder)!r})
assert run.config.model.units == 32 and run.vocab.size > 10
print("loaded:", sorted(m for m in {TRAINING_MODULES!r} if m in sys.modules))
"""
    result = run_outside_the_checkout(installed, tmp_path, "-c", program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: []" in result.stdout


@pytest.mark.slow
def test_generate_runs_on_an_installed_package(installed, trained_run_folder, tmp_path):
    result = run_outside_the_checkout(
        installed, tmp_path, str(REPO / "scripts" / "generate.py"), f"--workdir={trained_run_folder}",
        "--prompt=the state", "--length=30", "--config.sample.temperatures=(0.5,)",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the state" in result.stdout


@pytest.mark.slow
def test_the_served_page_is_packaged(installed, tmp_path):
    """charlstm/serve/static/index.html is package data: the app reads it from the installed package."""
    program = "import charlstm.serve.app as app; assert app.PAGE.startswith('<!doctype html>'); print(app.__file__)"
    result = run_outside_the_checkout(installed, tmp_path, "-c", program)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(str(installed))

"""scripts/train.py as a user runs it: overrides, and one-line errors with exit code 2."""

import json
import shutil

import pytest

from charlstm import config as config_lib
from charlstm import data
from charlstm.run_folder import RunFolder
from charlstm.train import train_and_evaluate
from tests.conftest import REPO, assert_one_line_error, run_script, snapshot, without_timing


def train(tmp_path, data_dir, *overrides):
    return run_script(
        "train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
        f"--config.data.dir={data_dir}", *overrides,
    )


@pytest.mark.slow
def test_an_override_takes_effect(tmp_path, data_dir):
    result = train(tmp_path, data_dir, "--config.train.epochs=1", "--config.sample.temperatures=(0.2,0.5,1.0)")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["sample"]["temperatures"] == [0.2, 0.5, 1.0]
    assert "val_bpc" in result.stdout and "--- temperature 1.0:" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("override, words", [
    # One of each kind; config.validate's own cases are in test_config.py.
    ("--config.data.path=/no/such/corpus.txt", ["does not exist", "data.path"]),
    ("--config.train.epochz=3", ["unknown config field", "epochz"]),
    ("--config.sample.temperatures=abc", ["sample.temperatures"]),
    ("--config.train.learning_rate=-1.0", ["train.learning_rate", "> 0"]),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, data_dir, override, words):
    assert_one_line_error(train(tmp_path, data_dir, override), *words)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_corpus_too_short_after_cleaning_is_refused(tmp_path, data_dir):
    short = tmp_path / "short.txt"
    short.write_text("@@@ only a few characters survive cleaning ###\n" * 3)
    assert_one_line_error(train(tmp_path, data_dir, f"--config.data.path={short}"), "seq_length")


@pytest.mark.slow
def test_resuming_on_a_corpus_that_changed_is_refused_and_changes_nothing(tiny_config, tmp_path, data_dir):
    corpus = tmp_path / "corpus.txt"
    shutil.copy(data.load_corpus(tiny_config.data).source, corpus)
    tiny_config.data.path, tiny_config.train.epochs = str(corpus), 1
    train_and_evaluate(tiny_config, tmp_path / "run")
    with open(corpus, "a") as f:
        f.write("one more line.\n")  # Past data.max_chars: only the file's SHA-256 tells.
    before = snapshot(tmp_path / "run")
    result = train(tmp_path, data_dir, f"--config.data.path={corpus}", "--config.train.epochs=2")
    assert_one_line_error(result, f"the corpus {str(corpus)!r} changed since")
    assert snapshot(tmp_path / "run") == before


def test_a_missing_config_file_is_refused(tmp_path):
    result = run_script("train.py", "--config", "configs/no_such_config.py", "--workdir", str(tmp_path))
    assert_one_line_error(result, "no_such_config.py")


@pytest.mark.slow
def test_distributed_with_a_bad_setting_is_one_line(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    assert_one_line_error(train(tmp_path, data_dir, "--distributed"), "JAX_NUM_PROCESSES='two'")


@pytest.mark.slow
@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n    pass\n", "has a syntax error at line 1: invalid syntax"),
    ("def get_config():\n    raise RuntimeError('no such corpus')\n", "line 2: RuntimeError: no such corpus"),
    ("x = 1\n", "defines no get_config()"),
    ("def get_config():\n    return 5\n", "returned int, not a ConfigDict"),
])
def test_a_config_file_that_fails_to_load_is_one_line_naming_it(tmp_path, source, message):
    path = tmp_path / "broken.py"
    path.write_text(source)
    result = run_script("train.py", "--config", str(path), "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path, data_dir):
    (tmp_path / "file").write_text("")
    result = run_script(
        "train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "file" / "run"),
        f"--config.data.dir={data_dir}",
    )
    assert_one_line_error(result, "is inside", "which is a file")


@pytest.mark.slow
def test_a_run_folder_as_config_trains_with_its_config_and_overrides(trained_run_folder, tmp_path):
    result = run_script(
        "train.py", "--config", str(trained_run_folder), "--workdir", str(tmp_path / "run"),
        "--config.train.log_every_steps=5",  # An override that leaves the numbers alone.
    )
    assert result.returncode == 0, result.stderr
    original, again = (json.loads((f / "config.json").read_text()) for f in (trained_run_folder, tmp_path / "run"))
    assert again == {**original, "train": {**original["train"], "log_every_steps": 5}}
    assert without_timing(RunFolder(tmp_path / "run").read_metrics()) == without_timing(
        RunFolder(trained_run_folder).read_metrics()
    )


@pytest.mark.slow
def test_a_run_folder_as_config_needs_a_workdir(tmp_path):
    (tmp_path / "config.json").write_text(config_lib.to_json(config_lib.from_file(REPO / "configs" / "tiny.py")))
    result = run_script("train.py", "--config", str(tmp_path / "config.json"))
    assert_one_line_error(result, "give --workdir")

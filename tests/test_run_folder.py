"""Run folder guards: the lock, the resume-compatibility check, and bad input changing nothing."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import flax
import jax
import pytest

from charlstm import CharLSTMError, reports
from charlstm.run_folder import RunFolder, config_differences
from charlstm.train import train_and_evaluate
from tests.conftest import run_script, snapshot


@pytest.fixture
def trained(trained_run_folder, tiny_config, tmp_path):
    """A copy of the session's finished one-epoch tiny run, for this test to change, and its config."""
    tiny_config.train.epochs = 1
    return shutil.copytree(trained_run_folder, tmp_path / "run"), tiny_config


def test_a_live_lock_holder_is_refused_and_named(trained):
    workdir, config = trained
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (workdir / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        with pytest.raises(CharLSTMError, match=f"in use by process {holder.pid}"):
            train_and_evaluate(config, workdir)
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_cleared(trained, capsys):
    workdir, config = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (workdir / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    config.train.epochs = 2
    metrics = train_and_evaluate(config, workdir)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert "stale lock" in capsys.readouterr().out
    assert not (workdir / ".lock").exists()


def test_resuming_with_other_settings_lists_the_fields(trained):
    workdir, config = trained
    before = snapshot(workdir)
    config.model.units = 48
    config.train.learning_rate = 0.5
    config.train.epochs = 3  # May grow.
    config.sample.temperatures = (1.0,)  # May change.
    with pytest.raises(CharLSTMError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "model.units (saved 32, now 48)" in message and "train.learning_rate (saved 0.01, now 0.5)" in message
    assert "epochs" not in message and "temperatures" not in message
    assert snapshot(workdir) == before


def test_config_differences_ignore_only_resumable_fields():
    saved = {"seed": 0, "train": {"epochs": 2, "batch_size": 8}, "sample": {"length": 5}}
    now = {"seed": 1, "train": {"epochs": 9, "batch_size": 8}, "sample": {"length": 50}}
    assert config_differences(saved, now) == ["seed (saved 0, now 1)"]


def test_how_val_loss_is_measured_may_not_change_on_resume_but_its_memory_and_final_scores_may():
    saved = {"eval": {"protocol": "segments", "burn_in": 100, "batch_size": 256, "final_protocols": ["window"]}}
    now = {"eval": {"protocol": "window", "burn_in": 50, "batch_size": 8, "final_protocols": []}}
    assert config_differences(saved, now) == [
        "eval.burn_in (saved 100, now 50)", "eval.protocol (saved 'segments', now 'window')"
    ]


def test_a_run_saved_before_a_field_existed_resumes_with_its_default(trained, capsys):
    workdir, config = trained
    saved = json.loads((workdir / "config.json").read_text())
    del saved["data"]["test_fraction"], saved["eval"]["protocol"]  # Fields a run of an earlier version lacks.
    (workdir / "config.json").write_text(json.dumps(saved))
    train_and_evaluate(config, workdir)
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("field, value", [
    ("model.units", 0), ("model.num_layers", 0), ("data.seq_length", 0), ("train.batch_size", 0),
    ("train.epochs", 0), ("train.learning_rate", -1.0), ("data.val_fraction", 1.5),
    ("sample.temperatures", (-0.1,)), ("sample.top_p", 0.0),
])
def test_invalid_config_changes_nothing_in_an_existing_run(trained, field, value):
    workdir, config = trained
    before = snapshot(workdir)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(CharLSTMError, match=field):
        train_and_evaluate(config, workdir)
    assert snapshot(workdir) == before


CORPORA = {  # Each case of data.load_corpus's own tests, through train.py resuming a run.
    "missing": (None, "does not exist"),
    "not utf-8": (bytes(range(128, 256)) * 100, "undecodable"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CORPORA)
def test_bad_corpus_is_one_line_exit_2_and_changes_nothing(trained, tmp_path, case):
    workdir, _ = trained
    content, words = CORPORA[case]
    path = tmp_path / "corpus.txt"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    before = snapshot(workdir)
    result = run_script(
        "train.py", "--config", "configs/tiny.py", "--workdir", str(workdir), f"--config.data.path={path}"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert snapshot(workdir) == before


def test_run_info_records_what_repeats_the_run(trained):
    workdir, _ = trained
    (info,) = RunFolder(workdir).read_run_info()
    corpus = Path(info["corpus"]["path"]).read_bytes()
    assert info["corpus"]["sha256"] == hashlib.sha256(corpus).hexdigest()
    assert info["corpus"]["bytes"] == len(corpus)
    assert {name: version for name, version in info["packages"].items() if name in ("jax", "flax")} == {
        "jax": jax.__version__, "flax": flax.__version__
    }
    assert info["devices"] and "python" in info and "command" in info


def test_lines_cut_off_by_a_crash_are_dropped_on_resume_and_skipped_by_readers(trained, capsys, tmp_path):
    workdir, config = trained
    for name in ("metrics.jsonl", "samples.jsonl", "run_info.jsonl"):
        with open(workdir / name, "a") as f:
            f.write('{"epoch": 2, "val_lo')  # A write the crash cut off: no closing brace, no newline.
    assert len(RunFolder(workdir).read_metrics()) == 1  # Readers skip it...
    assert "skipped line 2" in capsys.readouterr().err
    reports.compare_runs([workdir], tmp_path / "c.png")  # ...so compare.py and sweeps still work.
    config.train.epochs = 2
    metrics = train_and_evaluate(config, workdir)  # Resuming drops it, and appends whole lines again.
    assert "dropped a cut-off last line" in capsys.readouterr().err
    assert [m["epoch"] for m in metrics] == [1, 2]
    for name in ("metrics.jsonl", "samples.jsonl", "run_info.jsonl"):
        assert all(json.loads(line) for line in (workdir / name).read_text().splitlines())


def test_a_file_in_the_way_of_a_run_folder_is_called_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    for make in (RunFolder.create, RunFolder.open):
        with pytest.raises(CharLSTMError, match="'.*notes.txt' is a file, not a run folder"):
            make(tmp_path / "notes.txt")
        with pytest.raises(CharLSTMError, match="inside '.*notes.txt', which is a file"):
            make(tmp_path / "notes.txt" / "run")

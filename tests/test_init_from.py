"""Fine-tuning from a trained run (train.init_from): which rows are kept, which are fresh, what is refused."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from charlstm import data, init_from, stopping, train
from charlstm.checkpoints import CheckpointMeta, Checkpoints
from charlstm.errors import CharLSTMError
from charlstm.loop import Training
from charlstm.model import create_model, split_model, vocab_axes
from charlstm.run_folder import RunFolder
from tests.conftest import REPO, assert_one_line_error, run_script, snapshot, without_timing


@pytest.fixture
def finetune_config(tiny_config, trained_run_folder, data_dir, tmp_path):
    """The tiny config on another text than trained_run_folder's, starting from that run: the text keeps its
    capitals and a '#' (new characters) and lacks digits (dropped ones)."""
    text = (data_dir / "obama.txt").read_text()[:25_000]
    path = tmp_path / "other.txt"
    path.write_text("# " + text.translate(str.maketrans("", "", "0123456789")))
    tiny_config.data.path, tiny_config.data.keep_chars, tiny_config.data.lowercase = str(path), "", False
    tiny_config.train.init_from = str(trained_run_folder)
    return tiny_config


def assert_rows_moved(new: dict, old: dict, old_vocab: data.Vocab, new_vocab: data.Vocab, fresh: dict) -> None:
    """Each character's slice of `new` along its vocabulary axis is, bit for bit, `old`'s slice of that
    character when `old_vocab` has it, else `fresh`'s; every other parameter is `old`'s."""
    axes = vocab_axes(fresh)
    for (path, got), (_, want_fresh), (_, want_old) in zip(
        *(jax.tree.leaves_with_path(t) for t in (new, fresh, old)), strict=True
    ):
        key = tuple(k.key for k in path)
        assert np.shape(got) == np.shape(want_fresh), key
        if key not in axes:
            np.testing.assert_array_equal(got, want_old, err_msg=str(key))
            continue
        rows, fresh_rows, old_rows = (np.moveaxis(np.asarray(x), axes[key], 0) for x in (got, want_fresh, want_old))
        for i, char in enumerate(new_vocab.chars):
            want = old_rows[old_vocab.chars.index(char)] if char in old_vocab.chars else fresh_rows[i]
            np.testing.assert_array_equal(rows[i], want, err_msg=f"{key} row of {char!r}")


@pytest.mark.parametrize("fields", [
    {"embed_dim": 0}, {"embed_dim": 3}, {"embed_dim": 3, "tie_weights": True},
    {"cell": "mogrifier", "mogrifier_rounds": 3},  # One-hot input: its round kernels have a vocabulary axis.
])
def test_transfer_keeps_shared_rows_and_takes_new_ones_from_the_fresh_model(tiny_config, fields):
    tiny_config.model.update(fields)
    old_vocab, new_vocab = data.Vocab("abcd"), data.Vocab("Xacdz")  # b dropped; X and z new.
    fresh = split_model(create_model(tiny_config, new_vocab.size))[1]
    tiny_config.seed = 1  # The source's weights differ from a fresh model's everywhere.
    old = split_model(create_model(tiny_config, old_vocab.size))[1]
    assert_rows_moved(init_from.transfer(old, old_vocab, new_vocab, fresh), old, old_vocab, new_vocab, fresh)


def test_a_fine_tune_starts_from_the_sources_rows_and_a_fresh_optimizer(finetune_config, tmp_path):
    source = init_from.source_run(finetune_config, tmp_path / "run")
    corpus = data.load_corpus(finetune_config.data)
    assert init_from.shared_chars(source.vocab, corpus.vocab) and source.vocab.missing(corpus.vocab.chars)
    assert corpus.vocab.missing(source.vocab.chars)  # Characters dropped, kept and new: every case occurs.
    training, state = Training.start(
        finetune_config, corpus, RunFolder.create(tmp_path / "run"), stopping.StopRequest(), source
    )
    # A model created from scratch for the new vocabulary, with the same seed: the rows of new characters.
    fresh = split_model(create_model(finetune_config, corpus.vocab.size))[1]
    assert_rows_moved(state.params, source.params, source.vocab, corpus.vocab, fresh)
    assert state.step == 0 and not any(np.any(x) for x in jax.tree.leaves(state.opt_state))
    assert training.started_from["step"] == source.step


@pytest.mark.slow
def test_a_fine_tune_records_its_start_and_resumes_without_its_source(finetune_config, trained_run_folder, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(trained_run_folder, source)
    finetune_config.train.init_from, finetune_config.train.epochs = str(source), 2
    finetune_config.eval.final_protocols = ()
    uninterrupted = train.train_and_evaluate(finetune_config, tmp_path / "whole")
    finetune_config.train.stop_after_epoch = 1
    train.train_and_evaluate(finetune_config, tmp_path / "run")
    shutil.rmtree(source)  # A resumed run restores its own checkpoint: the source is not read again.
    finetune_config.train.stop_after_epoch = 0
    assert without_timing(train.train_and_evaluate(finetune_config, tmp_path / "run")) == without_timing(uninterrupted)
    first, resumed = RunFolder.open(tmp_path / "run").read_run_info()
    old, new = (
        set(json.loads((f / "vocab.json").read_text())["chars"])
        for f in (trained_run_folder, tmp_path / "run")
    )
    assert first["init_from"] == {
        "path": str(source.resolve()),
        "step": RunFolder.open(trained_run_folder).checkpoints.best_step(),
        "kept": "".join(sorted(old & new)), "added": "".join(sorted(new - old)), "dropped": "".join(sorted(old - new)),
    }
    assert "init_from" not in resumed


@pytest.mark.parametrize(
    "field, value, saved", [("cell", "gru", "lstm"), ("units", 16, 32), ("num_layers", 2, 1), ("embed_dim", 8, 0)]
)
def test_a_source_with_other_weight_shapes_is_refused_before_the_corpus_is_read(
    finetune_config, trained_run_folder, tmp_path, field, value, saved
):
    before = snapshot(trained_run_folder)
    finetune_config.model[field] = value
    finetune_config.data.path = str(tmp_path / "not_read.txt")  # Does not exist: the check comes first.
    with pytest.raises(CharLSTMError, match=rf"train.init_from run .* --config.model.{field}={saved}\b"):
        train.train_and_evaluate(finetune_config, tmp_path / "run")
    assert snapshot(trained_run_folder) == before and not (tmp_path / "run").exists()


def unfinished_run(tmp_path, trained):
    """A run folder whose only checkpoint was saved mid-epoch: no best checkpoint."""
    checkpoints = Checkpoints(tmp_path / "unfinished")
    checkpoints.save(3, {"params": {"w": jnp.ones(2)}}, CheckpointMeta("ab", {}))
    checkpoints.wait()
    return tmp_path / "unfinished"


@pytest.mark.parametrize("source, words", [
    (lambda tmp_path, trained: trained, "this run's own folder"),
    (lambda tmp_path, trained: tmp_path / "missing", "no such folder"),
    (lambda tmp_path, trained: tmp_path, "it has no checkpoint"),
    (lambda tmp_path, trained: trained / "config.json", "no such folder"),
    (unfinished_run, "no finished epoch"),
], ids=["own folder", "missing", "no checkpoint", "a file", "no finished epoch"])
def test_a_source_that_is_no_trained_run_is_refused(finetune_config, trained_run_folder, tmp_path, source, words):
    path = source(tmp_path, trained_run_folder)
    before = snapshot(path) if path.is_dir() else path.exists() and path.read_bytes()
    finetune_config.train.init_from = str(path)
    workdir = trained_run_folder if path == trained_run_folder else tmp_path / "run"
    with pytest.raises(CharLSTMError, match=words):
        train.train_and_evaluate(finetune_config, workdir)
    assert before == (snapshot(path) if path.is_dir() else path.exists() and path.read_bytes())
    assert not (tmp_path / "run").exists()


def test_init_from_given_to_a_run_trained_without_it_is_refused(tiny_config, trained_run_folder, tmp_path):
    shutil.copytree(trained_run_folder, tmp_path / "run")
    tiny_config.train.epochs = 1  # As trained_run_folder was trained; only init_from differs.
    tiny_config.train.init_from = str(trained_run_folder)
    with pytest.raises(CharLSTMError, match="train.init_from \\(saved '', now"):
        train.train_and_evaluate(tiny_config, tmp_path / "run")


@pytest.mark.slow
def test_the_script_refuses_another_model_in_one_line(trained_run_folder, data_dir, tmp_path):
    result = run_script(
        "train.py", "--config", str(REPO / "configs" / "tiny.py"), f"--config.data.dir={data_dir}",
        f"--config.train.init_from={trained_run_folder}", "--config.model.units=16", "--workdir", str(tmp_path / "r"),
    )
    assert_one_line_error(result, "train.init_from", "--config.model.units=32")
    assert not (tmp_path / "r").exists()

import json
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import charlstm
from charlstm import data, evaluate, export, loop, lstm, parallel, portable, stopping, trained_run
from charlstm.checkpoints import Checkpoints
from charlstm.errors import CharLSTMError, TrainingInterrupted
from charlstm.model import CharLSTM, create_model, split_model
from charlstm.optimizer import make_optimizer
from charlstm.run_folder import RunFolder
from charlstm.train import train_and_evaluate
from charlstm.train_step import initial_state, make_train_step
from tests.conftest import assert_float32_accurate, in_float64, run_script, vocab_of, without_timing

RUN_FILES = {
    "config.json", "vocab.json", "metrics.jsonl", "samples.txt", "samples.jsonl", "samples.md", "curves.png",
    "run_info.jsonl", "checkpoints", "final_metrics.json",
}
METRIC_FIELDS = {
    "epoch", "step", "train_loss", "val_loss", "val_bpc", "val_protocol", "seconds", "val_seconds", "chars_per_second",
    "longest_copy", "copied_share",
}


@pytest.mark.slow
def test_a_tiny_model_overfits_a_repeated_string(tiny_config):
    text = "the state of our union is strong. " * 20
    vocab, seq_length = vocab_of(text), 16
    tiny_config.data.seq_length = seq_length
    ids = jnp.asarray(vocab.encode(text))
    graphdef, params = split_model(CharLSTM(vocab.size, 32, 1, rngs=nnx.Rngs(0)))
    tx = optax.adam(1e-2)
    step, state = make_train_step(tiny_config, graphdef, tx), initial_state(params, tx, None)
    rng = np.random.default_rng(0)
    for _ in range(300):
        state, loss = step(state, ids, jnp.asarray(rng.integers(0, len(text) - seq_length - 1, 16), jnp.int32))
    assert float(loss) < 0.1 and state.step == 300


def test_tiny_run_writes_the_run_folder_and_resumes(tiny_config, tmp_path, capsys):
    workdir = tmp_path / "run"
    metrics = train_and_evaluate(tiny_config, workdir)
    assert RUN_FILES <= {p.name for p in workdir.iterdir()}
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(set(m) == METRIC_FIELDS for m in metrics)
    assert metrics[1]["val_loss"] < metrics[0]["val_loss"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["units"] == tiny_config.model.units
    assert json.loads((workdir / "vocab.json").read_text())["chars"] == data.load_corpus(tiny_config.data).vocab.chars
    samples = (workdir / "samples.txt").read_text()
    assert samples.count("--- temperature 0.5:") == 2 and samples.count("--- temperature 1.2:") == 2

    capsys.readouterr()
    tiny_config.train.epochs = 3
    metrics = train_and_evaluate(tiny_config, workdir)
    assert "resuming" in capsys.readouterr().out
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[2]["step"] == 3 * metrics[0]["step"]
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.latest_step() == metrics[2]["step"]
    best = min(metrics, key=lambda m: m["val_loss"])
    assert checkpoints.best_step() == best["step"]


def test_last_objective_trains_one_target_per_window(tiny_config, tmp_path):
    tiny_config.train.objective = "last"
    tiny_config.train.epochs = 1
    tiny_config.train.batch_size = 256
    tiny_config.data.max_chars = 4000
    (metrics,) = train_and_evaluate(tiny_config, tmp_path / "last")
    train_chars = 4000 - 400
    assert metrics["step"] == (train_chars - tiny_config.data.seq_length) // 256


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_cell_trains_the_tiny_config(tiny_config, tmp_path, cell):
    tiny_config.model.cell = cell
    tiny_config.model.num_layers = 2
    tiny_config.model.dropout = 0.1
    metrics = train_and_evaluate(tiny_config, tmp_path / cell)
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] < np.log(44)


@pytest.mark.slow
def test_stateful_training_with_regularisers_runs_end_to_end(tiny_config, tmp_path):
    tiny_config.train.stateful = True
    tiny_config.model.weight_dropout = 0.2
    tiny_config.model.embed_dim = 8
    tiny_config.train.clip_norm = 1.0
    tiny_config.train.weight_decay = 1e-4
    tiny_config.train.schedule = "cosine"
    tiny_config.train.warmup_steps = 5
    metrics = train_and_evaluate(tiny_config, tmp_path / "stateful")
    assert metrics[1]["val_loss"] < metrics[0]["val_loss"]
    expected_steps = ((18_000 - 1 - 19) // 16 - 1) // 20  # Upper bound of stream steps per epoch.
    assert 0 < metrics[0]["step"] <= expected_steps


@pytest.mark.slow
def test_the_regularisation_methods_train_resume_sample_score_and_export(tiny_config, tmp_path):
    """Every method at once, a mogrifier with a tied head: training, its resume, per-epoch and final scores,
    the stateful sampler, beam search, dynamic evaluation and the NumPy export all run with them."""
    tiny_config.model.update(dropout=0.1, embed_dropout=0.1, embed_dim=8, tie_weights=True, cell="mogrifier",
                             mogrifier_rounds=2)
    tiny_config.train.update(activation_reg=1.0, temporal_activation_reg=1.0, stop_after_epoch=1)
    train_and_evaluate(tiny_config, tmp_path / "run")
    tiny_config.train.stop_after_epoch = 0
    metrics = train_and_evaluate(tiny_config, tmp_path / "run")
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[1]["val_loss"] < metrics[0]["val_loss"]
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())["val"]
    assert abs(final["stream"]["bpc"] - final["window"]["bpc"]) < 0.05
    model = charlstm.load(tmp_path / "run")
    greedy = model.generate("the state of", 40, 0.0)[0].text
    assert "".join(model.stream("the state of", length=40, temperature=0.0)) == greedy
    assert len(model.beam("the state of", 3, 5)) == 3
    assert np.isfinite(model.score(model.random_prompt(0) * 3, "dynamic").bpc)
    export.export_run(tmp_path / "run", tmp_path / "run.npz")
    assert portable.load(tmp_path / "run.npz").generate("the state of", 40, temperature=0) == greedy


def stopping_at(epoch_step: int, should_stop=stopping.should_stop):
    """`should_stop`, with a stop requested (as SIGINT would) at step `epoch_step` of an epoch."""

    def stop_at(stop: stopping.StopRequest, at: int, every: int) -> bool:
        if at == epoch_step:
            stop.signal = signal.SIGINT
        return should_stop(stop, at, every)

    return stop_at


@pytest.mark.slow
def test_stateful_training_starts_each_window_from_the_previous_ones_final_state(tiny_config, tmp_path, monkeypatch):
    """The carry saved after step k + 1 is the model's final state on window k + 1 (params of step k)
    started from the carry saved after step k: each step starts where the previous one ended."""
    tiny_config.train.stateful = True
    tiny_config.train.epochs = 1
    k = 10
    for at in (k, k + 1):  # Stop at step k, then resume and stop one step later.
        monkeypatch.setattr(stopping, "should_stop", stopping_at(at))
        with pytest.raises(TrainingInterrupted, match=f"saved step {at} "):
            train_and_evaluate(tiny_config, tmp_path)
    run = trained_run.load(tmp_path, str(k))
    corpus = data.load_corpus(tiny_config.data)
    starts = loop.window_starts(corpus, tiny_config, epoch=1)[k]
    window = data.gather_windows(jnp.asarray(corpus.train_ids), jnp.asarray(starts), tiny_config.data.seq_length + 1)
    _, from_zeros = evaluate.sequence_nll(run.graphdef, run.params, window[:, :-1], window[:, 1:], None)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    carry = checkpoints.restore_part(k, "carry", from_zeros)

    def final_state(params, carry):
        return evaluate.sequence_nll(run.graphdef, params, window[:, :-1], window[:, 1:], carry)[1]

    expected32, expected64 = final_state(run.params, carry), in_float64(final_state, run.params, carry)
    saved = checkpoints.restore_part(k + 1, "carry", from_zeros)
    # The same cells in another compiled program (training's has a backward pass): rounding may differ a little.
    assert_float32_accurate(saved, expected32, expected64, "saved carry")
    for got, fresh in zip(jax.tree.leaves(saved), jax.tree.leaves(from_zeros)):
        # Starting from zeros ends elsewhere (by 5e-3 and more here), far outside that tolerance.
        assert np.abs(np.asarray(got) - np.asarray(fresh)).max() > 1e-3


def test_processes_agree_to_stop_every_few_steps_and_a_signal_to_any_stops_all(monkeypatch):
    """With several processes, should_stop asks all of them only at multiples of `every` (a collective
    every process must join), and then stops each one when any of them was signalled."""
    others, asked = stopping.StopRequest(), []

    def any_process_signal(signal_number):  # This process and one other, as parallel.any_process_signal.
        asked.append(signal_number)
        return max(signal_number or 0, others.signal or 0) or None

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(parallel, "any_process_signal", any_process_signal)
    stop = stopping.StopRequest()
    assert not any(stopping.should_stop(stop, step, every=4) for step in range(8))
    assert asked == [None, None]  # At steps 0 and 4 only.
    others.signal = signal.SIGTERM  # The other process is signalled, this one is not.
    assert [stopping.should_stop(stop, step, every=4) for step in range(9, 13)] == [False, False, False, True]
    assert stop.signal == signal.SIGTERM
    others.signal, stop = None, stopping.StopRequest(signal.SIGINT)  # This process is signalled at step 13.
    assert [stopping.should_stop(stop, step, every=4) for step in range(13, 17)] == [False, False, False, True]
    assert asked[-1] == signal.SIGINT  # What the other process learns at step 16.


def test_epochs_since_best():
    assert stopping.epochs_since_best([3.0, 2.0, 2.5, 2.4]) == 2
    assert stopping.epochs_since_best([3.0, 2.0, 1.0]) == 0


def test_early_stopping_stops_at_the_right_epoch(tiny_config, tmp_path, monkeypatch, capsys):
    scripted = iter([2.0, 1.5, 1.6, 1.4, 1.45, 1.5, 1.3, 1.2])
    monkeypatch.setattr(evaluate, "mean_nll", lambda *args: next(scripted))
    tiny_config.eval.final_protocols = ()  # The script above is for the epochs.
    tiny_config.train.epochs = 8
    tiny_config.train.patience = 2
    metrics = train_and_evaluate(tiny_config, tmp_path / "early")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # Best at 4, then 2 epochs without.
    assert "early stopping" in capsys.readouterr().out
    assert Checkpoints(tmp_path / "early", read_only=True).best_step() == metrics[3]["step"]


def test_a_large_train_val_gap_warns(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "mean_nll", lambda *args: 10.0)
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, tmp_path / "gap")
    assert "overfitting" in capsys.readouterr().out


@pytest.mark.slow
def test_without_stateful_every_window_starts_from_zeros(tiny_config, tmp_path):
    """One epoch of the loop equals a plain loop of the train step over the epoch's batches from zeros."""
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, tmp_path)
    corpus = data.load_corpus(tiny_config.data)
    graphdef, params = split_model(create_model(tiny_config, corpus.vocab.size))
    starts = loop.window_starts(corpus, tiny_config, 1)
    tx = make_optimizer(tiny_config.train, len(starts) * tiny_config.train.epochs)
    step, state, ids = (
        make_train_step(tiny_config, graphdef, tx), initial_state(params, tx, None), corpus.train_ids
    )
    for batch in starts:
        state, _ = step(state, jnp.asarray(ids), batch)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    saved = checkpoints.restore_params(checkpoints.latest_step(), like=state.params)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)  # The same compiled step on the same batches: the same bits.


def test_bfloat16_mixed_precision_trains_without_nan(tiny_config, tmp_path):
    tiny_config.train.dtype = "bfloat16"
    metrics = train_and_evaluate(tiny_config, tmp_path)
    assert all(np.isfinite([m["train_loss"], m["val_loss"]]).all() for m in metrics)
    assert metrics[1]["val_loss"] < metrics[0]["val_loss"]
    saved = Checkpoints(tmp_path, read_only=True)
    like = split_model(create_model(tiny_config, data.load_corpus(tiny_config.data).vocab.size))[1]
    params = saved.restore_params(saved.latest_step(), like=like)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float32")}
    # The float32-only implementations (cuDNN, the CPU kernel) cannot train in bfloat16; evaluation is float32.
    expected = {"training": ["xla"], "evaluation": [lstm.select("auto", np.dtype("float32"))]}
    assert RunFolder(tmp_path).read_run_info()[-1]["lstm"] == expected


@pytest.mark.slow
@pytest.mark.skipif(lstm.IMPLEMENTATIONS["cudnn"].unavailable(np.dtype("float32")) is None, reason="cuDNN runs here")
def test_an_lstm_impl_that_cannot_run_here_stops_before_any_work(tmp_path, data_dir):
    result = run_script("train.py", "--config", "configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                        f"--config.data.dir={data_dir}", "--config.model.lstm_impl=cudnn")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith("error: model.lstm_impl='cudnn' cannot run here: it needs")
    assert message.endswith("'xla', 'autodiff'")  # What can run instead.
    assert not (tmp_path / "run").exists()  # Refused before the run folder was made.


def test_eval_max_chars_bounds_the_validation_text(tiny_config, tmp_path, monkeypatch):
    scored = []
    monkeypatch.setattr(evaluate, "mean_nll", lambda graphdef, params, ids, *args: scored.append(len(ids)) or 2.0)
    tiny_config.train.epochs = 1
    tiny_config.eval.max_chars = 300
    train_and_evaluate(tiny_config, tmp_path)
    assert scored == [tiny_config.data.seq_length + 300] * 3  # The epoch, then the best checkpoint's two protocols.


def test_the_per_epoch_metric_agrees_with_the_exact_window_metric(tiny_config, tmp_path):
    tiny_config.train.epochs = 3
    metrics = train_and_evaluate(tiny_config, tmp_path)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    best = next(m for m in metrics if m["step"] == final["step"])
    assert best["val_loss"] == min(m["val_loss"] for m in metrics) and best["val_protocol"] == "segments"
    assert abs(best["val_bpc"] - final["val"]["window"]["bpc"]) < 0.005  # The bound on the Obama runs.
    assert abs(final["val"]["stream"]["bpc"] - final["val"]["window"]["bpc"]) < 0.005
    assert final["val"]["window"]["chars"] == 2000 - tiny_config.data.seq_length


def test_the_final_evaluation_runs_again_when_its_settings_change(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, tmp_path)
    tiny_config.eval.final_protocols = ("window",)
    train_and_evaluate(tiny_config, tmp_path)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["protocols"] == ["window"] and final["val"].keys() == {"window"}


def test_the_final_evaluation_runs_on_resume_when_it_is_missing(tiny_config, tmp_path, capsys):
    tiny_config.train.epochs = 1
    train_and_evaluate(tiny_config, tmp_path)
    written = json.loads((tmp_path / "final_metrics.json").read_text())
    (tmp_path / "final_metrics.json").unlink()
    capsys.readouterr()
    train_and_evaluate(tiny_config, tmp_path)
    assert "already trained" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "final_metrics.json").read_text())["val"]["window"]["loss"]
        == written["val"]["window"]["loss"]
    )


def test_training_never_reads_the_test_split(tiny_config, tmp_path):
    """Two corpora that differ only in their test text train to the same metrics and weights."""
    text = data.clean_text(data.read_text(data.corpus_path(tiny_config.data)).text, tiny_config.data.keep_chars, True)
    text = text[: tiny_config.data.max_chars]
    shuffled_tail = "".join(np.random.default_rng(0).permutation(list(text[-2000:])))
    tiny_config.data.test_fraction = 0.1
    runs = []
    for name, content in (("a", text), ("b", text[:-2000] + shuffled_tail)):
        (tmp_path / f"{name}.txt").write_text(content)
        tiny_config.data.path = str(tmp_path / f"{name}.txt")
        metrics = train_and_evaluate(tiny_config, tmp_path / name)
        checkpoints = Checkpoints(tmp_path / name, read_only=True)
        like = split_model(create_model(tiny_config, 44))[1]
        params = checkpoints.restore_params(checkpoints.latest_step(), like=like)
        final = json.loads((tmp_path / name / "final_metrics.json").read_text())
        runs.append((without_timing(metrics), params, final))
    (metrics_a, params_a, final_a), (metrics_b, params_b, final_b) = runs
    assert metrics_a == metrics_b
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    for protocol, score in final_a["val"].items():
        assert {**score, "seconds": 0} == {**final_b["val"][protocol], "seconds": 0}
    assert final_a["test"]["window"]["chars"] == 2000 - tiny_config.data.seq_length
    assert final_a["test"]["window"]["loss"] < final_b["test"]["window"]["loss"]  # Shuffled text is harder.


@pytest.mark.parametrize("stateful", [False, True])
def test_recent_epochs_read_only_the_latest_part_of_the_training_text(tiny_config, stateful):
    """The last train.recent_epochs take their windows from the latest train.recent_fraction of the text; the
    earlier epochs from all of it, as without the setting; the schedule spans the steps both kinds take."""
    tiny_config.train.update(epochs=3, recent_epochs=2, recent_fraction=0.4, stateful=stateful)
    corpus = data.load_corpus(tiny_config.data)
    n, window = len(corpus.train_ids), tiny_config.data.seq_length + 1
    plain = tiny_config.copy_and_resolve_references()
    plain.train.recent_epochs = 0
    np.testing.assert_array_equal(loop.window_starts(corpus, tiny_config, 1), loop.window_starts(corpus, plain, 1))
    for epoch in (2, 3):
        starts = loop.window_starts(corpus, tiny_config, epoch)
        assert starts.min() >= n - int(0.4 * n) and starts.max() + window <= n
        assert len(starts) < len(loop.window_starts(corpus, plain, epoch))
    full, recent = (data.steps_per_epoch(count, window - 1, tiny_config.train.batch_size, "all")
                    for count in (n, int(0.4 * n)))
    assert loop.total_steps(corpus, tiny_config) == full + 2 * recent
    assert loop.total_steps(corpus, plain) == 3 * full


def test_recent_text_too_short_for_one_step_is_refused_before_training(tiny_config):
    tiny_config.train.update(recent_epochs=1, recent_fraction=1e-6)
    with pytest.raises(CharLSTMError, match=r"^train.recent_fraction=1e-06 of the training text holds no step"):
        loop.total_steps(data.load_corpus(tiny_config.data), tiny_config)

import json

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from charlstm import data
from charlstm.checkpoints import Checkpoints
from charlstm.model import CharLSTM
from charlstm.train import split_model, train_and_evaluate, train_step

RUN_FILES = {"config.json", "vocab.json", "metrics.jsonl", "samples.txt", "samples.jsonl", "run_info.jsonl", "checkpoints"}
METRIC_FIELDS = {"epoch", "step", "train_loss", "val_loss", "val_bpc", "seconds", "chars_per_second"}


def test_a_tiny_model_overfits_a_repeated_string():
    text = "the state of our union is strong. " * 20
    vocab, seq_length = data.Vocab.from_text(text), 16
    ids = jnp.asarray(vocab.encode(text))
    graphdef, params = split_model(CharLSTM(vocab.size, 32, 1, rngs=nnx.Rngs(0)))
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(300):
        starts = jnp.asarray(rng.integers(0, len(text) - seq_length - 1, 16), jnp.int32)
        params, opt_state, _, loss = train_step(
            graphdef, params, opt_state, 0.0, ids, starts, tx=tx, seq_length=seq_length, objective="all"
        )
    assert float(loss) < 0.1


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

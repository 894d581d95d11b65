"""train_and_evaluate(config, workdir): the training loop, its jit-compiled step and the run folder.

The model is split once into a static graphdef and a pure-dict params tree;
the step is a pure function of (params, opt_state, window starts, key)
compiled with jax.jit, so no NNX object crosses the jit boundary per step.
"""

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from charlstm import config as config_lib
from charlstm import data, evaluate, sampling
from charlstm.checkpoints import Checkpoints
from charlstm.errors import CharLSTMError
from charlstm.model import CharLSTM


def create_model(config: ml_collections.ConfigDict, vocab_size: int) -> CharLSTM:
    return CharLSTM(
        vocab_size, config.model.units, config.model.num_layers, rngs=nnx.Rngs(config.seed)
    )


def split_model(model: CharLSTM) -> tuple[nnx.GraphDef, dict]:
    """The static graph and the parameters as a pure dict of arrays."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


def make_optimizer(train: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Adam with the configured schedule over `total_steps`, after optional linear warm-up."""
    peak, warmup = train.learning_rate, train.warmup_steps
    if train.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return optax.adam(decay)
    ramp = optax.linear_schedule(0.0, peak, warmup)
    return optax.adam(optax.join_schedules([ramp, decay], [warmup]))


def loss_fn(graphdef: nnx.GraphDef, params, windows: jax.Array, objective: str) -> jax.Array:
    """Mean cross-entropy in nats over windows `[batch, seq_length + 1]`."""
    model = nnx.merge(graphdef, params)
    inputs = windows[:, :-1]
    if objective == "all":
        logits, _ = model(inputs)
        targets = windows[:, 1:]
    else:
        hs, _ = model.features(inputs)
        logits, targets = model.head(hs[:, -1]), windows[:, -1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@functools.partial(
    jax.jit, static_argnames=("graphdef", "tx", "seq_length", "objective"), donate_argnums=(1, 2)
)
def train_step(graphdef, params, opt_state, ids, starts, *, tx, seq_length, objective):
    """One Adam step on the windows starting at `starts` `[batch]`; returns the loss too."""
    windows = data.gather_windows(ids, starts, seq_length + 1)
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(graphdef, params, windows, objective)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


class RunFolder:
    """The files of a run folder: config, vocab, metrics, samples and checkpoints."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_setup(self, config: ml_collections.ConfigDict, vocab: data.Vocab) -> None:
        (self.path / "config.json").write_text(config_lib.to_json(config))
        (self.path / "vocab.json").write_text(vocab.to_json() + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def keep_metrics_through(self, epoch: int) -> None:
        """Drops metric lines of epochs after `epoch` (written before a crash lost them)."""
        kept = [m for m in self.read_metrics() if m["epoch"] <= epoch]
        (self.path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, metrics: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def append_samples(self, text: str) -> None:
        with open(self.path / "samples.txt", "a") as f:
            f.write(text)


def epoch_samples(graphdef, params, corpus: data.Corpus, config, epoch: int) -> str:
    """Text from a random validation prompt at each configured temperature."""
    seq_length, vocab = config.data.seq_length, corpus.vocab
    rng = np.random.default_rng([config.seed, epoch])
    start = int(rng.integers(len(corpus.val_ids) - seq_length + 1))
    prompt = corpus.val_ids[start : start + seq_length]
    temperatures = jnp.asarray(config.sample.temperatures, jnp.float32)
    keys = jnp.stack([jax.random.fold_in(jax.random.key(config.seed), epoch)] * len(temperatures))
    ids = sampling.generate_ids(
        graphdef, params, jnp.asarray(prompt), temperatures, keys, config.sample.length,
        config.sample.top_k, config.sample.top_p,
    )
    lines = [f"--- prompt: {vocab.decode(prompt)!r}"]
    for temperature, row in zip(config.sample.temperatures, np.asarray(ids)):
        lines.append(f"--- temperature {temperature}:\n{vocab.decode(row)}")
    return "\n".join(lines) + "\n"


def train_epoch(graphdef, params, opt_state, train_ids, starts, tx, config, desc: str):
    """Runs one epoch of steps; returns params, opt_state and the mean loss."""
    chars_per_step = starts.shape[1] * (config.data.seq_length if config.train.objective == "all" else 1)
    step_fn = functools.partial(
        train_step, graphdef, tx=tx, seq_length=config.data.seq_length, objective=config.train.objective
    )
    losses = []
    began = time.perf_counter()
    with tqdm(total=len(starts), desc=desc, unit="step", leave=False, disable=None) as bar:
        for i, batch in enumerate(starts):
            params, opt_state, loss = step_fn(params, opt_state, train_ids, batch)
            losses.append(loss)
            bar.update()
            if (i + 1) % config.train.log_every_steps == 0:
                rate = (i + 1) * chars_per_step / (time.perf_counter() - began)
                bar.set_postfix(loss=f"{float(loss):.3f}", chars_per_s=f"{rate:,.0f}")
    return params, opt_state, float(jnp.mean(jnp.stack(losses)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> list[dict]:
    """Trains (or resumes) the run in `workdir`; returns all epochs' metrics."""
    config_lib.validate(config)
    corpus = data.load_corpus(config.data)
    vocab = corpus.vocab
    print(
        f"corpus {corpus.source}: {len(corpus.train_ids):,} train + {len(corpus.val_ids):,} "
        f"validation characters, vocabulary of {vocab.size}: {vocab.chars!r}"
    )
    run = RunFolder(workdir)
    graphdef, params = split_model(create_model(config, vocab.size))
    steps = data.steps_per_epoch(
        len(corpus.train_ids), config.data.seq_length, config.train.batch_size, config.train.objective
    )
    tx = make_optimizer(config.train, steps * config.train.epochs)
    state = {"params": params, "opt_state": tx.init(params), "step": 0, "epoch": 0}
    checkpoints = Checkpoints(run.path)
    if (latest := checkpoints.latest_step()) is not None:
        state, meta = checkpoints.restore(latest, like=state)
        if meta["vocab"] != vocab.chars:
            raise CharLSTMError(
                f"the run in {str(run.path)!r} was trained on another vocabulary: "
                "use the same corpus or a new --workdir"
            )
        run.keep_metrics_through(state["epoch"])
        print(f"resuming from {run.path} at epoch {state['epoch'] + 1} (step {state['step']})")
    run.write_setup(config, vocab)
    if state["epoch"] >= config.train.epochs:
        print(f"already trained {state['epoch']} epochs: raise --config.train.epochs to go on")

    params, opt_state, step = state["params"], state["opt_state"], state["step"]
    train_ids = jnp.asarray(corpus.train_ids)
    for epoch in range(state["epoch"] + 1, config.train.epochs + 1):
        rng = np.random.default_rng([config.seed, epoch])
        starts = data.epoch_window_starts(
            len(corpus.train_ids), config.data.seq_length, config.train.batch_size,
            config.train.objective, rng,
        )
        began = time.perf_counter()
        params, opt_state, train_loss = train_epoch(
            graphdef, params, opt_state, train_ids, starts, tx, config,
            desc=f"epoch {epoch}/{config.train.epochs}",
        )
        seconds = time.perf_counter() - began
        step += len(starts)
        val_loss = evaluate.mean_nll(
            graphdef, params, corpus.val_ids, config.data.seq_length, config.eval.batch_size
        )
        targets = starts.size * (config.data.seq_length if config.train.objective == "all" else 1)
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_bpc": evaluate.bits_per_char(val_loss),
            "seconds": seconds,
            "chars_per_second": targets / seconds,
        }
        samples = epoch_samples(graphdef, params, corpus, config, epoch)
        print(
            f"epoch {epoch}: train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
            f"val_bpc {metrics['val_bpc']:.4f}  {seconds:.1f}s  "
            f"{metrics['chars_per_second']:,.0f} chars/s\n{samples}"
        )
        run.append_metrics(metrics)
        run.append_samples(f"=== epoch {epoch} (step {step})\n{samples}\n")
        meta = {"vocab": vocab.chars, "config": config.to_dict(), **metrics}
        state = {"params": params, "opt_state": opt_state, "step": step, "epoch": epoch}
        checkpoints.save(step, state, meta, val_loss)
    return run.read_metrics()

"""Where a train step's time goes: one step split at the top layer's outputs into its phases, ours beside
PyTorch's, each phase timed by the clock with the previous one finished.

The split is the same on both sides: the layers' forward pass (input, dropout masks, the recurrence,
keeping what its backward needs), the head and the loss with their backward (the logits, the softmax
cross-entropy, the head's gradients and that of the top outputs), the layers' backward pass (the
recurrence back, the weight gradients) and the optimizer's update. The weight-gradient matmul of the
first layer is also timed alone in the same shape, to show its share of the backward pass. The whole
step, unsplit, runs in the same turns: what it saves over the phases' sum is dispatch and fusion.
"""

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from charlstm import data, lstm
from charlstm.benchmarks import OBAMA_VOCAB
from charlstm.benchmarks.timing import clocked, in_turns
from charlstm.benchmarks.torch_step import torch_split_step, torch_train_step
from charlstm.benchmarks.training import train_steps
from charlstm.model import create_model, split_model
from charlstm.optimizer import make_optimizer

PHASES = ("forward", "head_and_loss", "backward", "optimizer")

SplitStep = Callable[[], dict[str, float]]  # Runs one step; seconds of each of PHASES and of the lone matmul.


def our_split_step(config: ml_collections.ConfigDict, vocab_size: int) -> SplitStep:
    """Our train step (charlstm.train_step.loss_fn's model and loss, the config's optimizer) on random
    windows, run as one jitted call per phase."""
    net = create_model(config, vocab_size)
    graphdef, params = split_model(net)
    tx = make_optimizer(config.train, 1000)
    state = {"params": params, "opt_state": tx.init(params)}
    rng = np.random.default_rng(config.seed)
    windows = jnp.asarray(rng.integers(vocab_size, size=(config.train.batch_size, config.data.seq_length + 1)),
                          jnp.int32)
    key, objective = jax.random.key(config.seed), config.train.objective

    @jax.jit
    def forward(params):
        return jax.vjp(lambda p: nnx.merge(graphdef, p).features(windows[:, :-1], None, key)[0], params)

    @jax.jit
    def head_and_loss(params, hs):
        def loss(params, hs):
            logits = nnx.merge(graphdef, params).logits(hs if objective == "all" else hs[-1])
            targets = windows[:, 1:].T if objective == "all" else windows[:, -1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        return jax.grad(loss, argnums=(0, 1))(params, hs)

    @jax.jit
    def backward(vjp, head_grads, d_hs):
        return jax.tree.map(jnp.add, head_grads, vjp(d_hs)[0])

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    units, rows = config.model.units, config.train.batch_size * config.data.seq_length
    hs_flat, dz_flat = jnp.ones((rows, units)), jnp.ones((rows, 4 * units))
    weight_gradient = jax.jit(lambda hs, dz: hs.T @ dz)

    def step() -> dict[str, float]:
        phases: dict[str, float] = {}
        began = time.perf_counter()
        hs, vjp = jax.block_until_ready(forward(state["params"]))
        began = clocked(phases, "forward", began)
        head_grads, d_hs = jax.block_until_ready(head_and_loss(state["params"], hs))
        began = clocked(phases, "head_and_loss", began)
        grads = jax.block_until_ready(backward(vjp, head_grads, d_hs))
        began = clocked(phases, "backward", began)
        state["params"], state["opt_state"] = jax.block_until_ready(update(state["params"], state["opt_state"], grads))
        began = clocked(phases, "optimizer", began)
        jax.block_until_ready(weight_gradient(hs_flat, dz_flat))
        clocked(phases, "weight_gradient_matmul", began)
        return phases

    return step


def phases_section(config: ml_collections.ConfigDict, steps: int) -> dict:
    """Median seconds of each phase of `steps` split steps and of the whole step, ours and (where installed)
    PyTorch's side by side (`{"phase_forward_seconds": {"ours": ..., "torch": ...}, ...}`), run in_turns."""
    split: dict[str, SplitStep] = {"ours": our_split_step(config, OBAMA_VOCAB)}
    whole: dict[str, Callable[[int], object]] = {"ours": train_steps(config, OBAMA_VOCAB, steps)}
    if (torch_step := torch_train_step(config, OBAMA_VOCAB)) is not None:
        split["torch"], whole["torch"] = torch_split_step(config, OBAMA_VOCAB), torch_step

    def run(side: str) -> Callable[[int], dict[str, float]]:
        def split_then_whole(i: int) -> dict[str, float]:
            measured = split[side]()
            began = time.perf_counter()
            jax.block_until_ready(whole[side](i))
            return {**measured, "whole_step": time.perf_counter() - began}

        return split_then_whole

    kept = in_turns({side: run(side) for side in split}, steps)
    results = {f"phase_{name}_seconds": {side: statistics.median(m[name] for m in kept[side]) for side in kept}
               for name in kept["ours"][0]}
    results["phase_targets_per_step"] = config.train.batch_size * data.targets_per_window(
        config.data.seq_length, config.train.objective)
    results["phase_lstm_impl"] = lstm.select(config.model.lstm_impl, jnp.dtype(config.train.dtype))
    return results

"""One optimizer step, jit-compiled, and the state it hands the next: TrainState, loss_fn, make_train_step.

The model is split once into a static graphdef and a pure-dict params tree;
make_train_step compiles one optimizer step, a pure function of the state's
arrays and the window starts, with jax.jit, so no NNX object crosses the jit
boundary per step. TrainState holds what one step hands the next and a
checkpoint keeps.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx, struct

from charlstm import averaging, data, parallel
from charlstm.model import RecurrentState, create_model, split_model

# Independent random streams derived from config.seed.
DROPOUT_STREAM, SAMPLE_STREAM = 1, 2


def shardings() -> dict[str, jax.sharding.NamedSharding]:
    """Where training puts its arrays on the mesh of all devices: 'batch' (window starts, the stateful
    carry) split over the 'data' axis; 'replicated' (params, optimizer state, corpus ids) on every device."""
    mesh = parallel.make_mesh()
    return {"batch": parallel.batch_sharding(mesh), "replicated": parallel.replicated(mesh)}


def placed_model(
    config: ml_collections.ConfigDict, vocab_size: int, placement: dict
) -> tuple[nnx.GraphDef, dict, RecurrentState]:
    """A new model's graph, its params replicated and a zero LSTM state `[batch, units]` split over the batch."""
    model = create_model(config, vocab_size)
    zero_carry = parallel.put(model.initial_state(config.train.batch_size), placement["batch"])
    graphdef, params = split_model(model)
    return graphdef, parallel.put(params, placement["replicated"]), zero_carry


@struct.dataclass
class TrainState:
    """What one training step hands the next, and a checkpoint keeps: the arrays, then host counters."""

    params: dict
    opt_state: optax.OptState
    loss_sum: jax.Array  # The epoch's summed loss, kept on device so that the loop never waits for it.
    carry: RecurrentState  # The LSTM state between windows in stateful training (zeros otherwise).
    step: int = struct.field(pytree_node=False, default=0)  # Optimizer steps taken.
    epoch: int = struct.field(pytree_node=False, default=0)  # Finished epochs.
    epoch_step: int = struct.field(pytree_node=False, default=0)  # Steps into the next epoch.
    epoch_seconds: float = struct.field(pytree_node=False, default=0.0)  # That epoch's training time so far.

    def to_checkpoint(self) -> dict:
        """Every field by name: the checkpoint's format."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "TrainState":
        counters = {name: int(saved[name]) for name in ("step", "epoch", "epoch_step")}
        return cls(**{**saved, **counters, "epoch_seconds": float(saved["epoch_seconds"])})

    def model_params(self) -> dict:
        """The weights that are evaluated, sampled and kept as the model (averaging.model_params)."""
        return averaging.model_params(self.params, self.opt_state)


def initial_state(params, tx: optax.GradientTransformation, carry: RecurrentState) -> TrainState:
    """A new run's state; its arrays are placed like `params`, so a checkpoint restores onto the devices
    training uses."""
    sharding = jax.tree.leaves(params)[0].sharding
    loss_sum = parallel.put(np.zeros((), np.float32), sharding)
    return TrainState(params=params, opt_state=parallel.put(tx.init(params), sharding), loss_sum=loss_sum, carry=carry)


def in_dtype(tree, dtype: str):
    """`tree`'s floating arrays cast to `dtype` (a no-op for float32)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def activation_penalty(raw: jax.Array, dropped: jax.Array, activation_reg: float, temporal_reg: float) -> jax.Array:
    """AR and TAR (Merity et al. 2018) of the top layer's outputs `[time, batch, units]`: `activation_reg`
    times the mean square of the `dropped` (after dropout) outputs, plus `temporal_reg` times the mean square
    of the `raw` (before dropout) outputs' change from one step to the next; float32."""
    activation = jnp.mean(jnp.square(dropped.astype(jnp.float32)))
    temporal = jnp.mean(jnp.square(jnp.diff(raw.astype(jnp.float32), axis=0)))
    return activation_reg * activation + temporal_reg * temporal


def loss_fn(
    graphdef: nnx.GraphDef, params, windows: jax.Array, objective: str, dropout_key, carry, dtype: str = "float32",
    penalties: tuple[float, float] = (0.0, 0.0),
):
    """The training objective over windows `[batch, seq_length + 1]`, and (its mean cross-entropy in nats, the
    final state).

    `carry` is the state to start from (stateful training) or None (zeros);
    `dropout_key` None turns dropout off. `dtype` 'bfloat16' computes the model in
    bfloat16 from float32 params (mixed precision: gradients and updates stay
    float32); the loss and the returned state are float32 either way. The
    objective is the cross-entropy plus, when `penalties` (train.activation_reg,
    train.temporal_activation_reg) are not zero, the activation_penalty.
    """
    model = nnx.merge(graphdef, in_dtype(params, dtype))
    raw, hs, carry = model.top_outputs(windows[:, :-1], None if carry is None else in_dtype(carry, dtype), dropout_key)
    if objective == "all":
        logits, targets = model.logits(hs), windows[:, 1:].T  # Time-major, as hs.
    else:
        logits, targets = model.logits(hs[-1]), windows[:, -1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets).mean()
    total = loss + activation_penalty(raw, hs, *penalties) if any(penalties) else loss
    return total, (loss, in_dtype(carry, "float32"))


TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]


def make_train_step(
    config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, tx: optax.GradientTransformation
) -> TrainStep:
    """`step(state, ids, starts)`: one optimizer step on the windows of corpus `ids` starting at `starts`
    `[batch]`, as `config.train` asks (objective, dtype, stateful); returns the new state and the step's
    loss. Dropout draws from fold_in(key, step), so no RNG state needs saving."""
    key = jax.random.fold_in(jax.random.key(config.seed), DROPOUT_STREAM)
    seq_length, objective, dtype = config.data.seq_length, config.train.objective, config.train.dtype
    penalties = (config.train.activation_reg, config.train.temporal_activation_reg)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, loss_sum, carry, ids: jax.Array, starts: jax.Array, step):
        windows = data.gather_windows(ids, starts, seq_length + 1)
        grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
        (_, (loss, carry)), grads = grad_fn(
            graphdef, params, windows, objective, jax.random.fold_in(key, step), carry, dtype, penalties
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        carry = jax.lax.stop_gradient(carry)  # Truncated backpropagation through time.
        return optax.apply_updates(params, updates), opt_state, loss_sum + loss, loss, carry

    def step(state: TrainState, ids: jax.Array, starts: jax.Array) -> tuple[TrainState, jax.Array]:
        carry = state.carry if config.train.stateful else None  # Otherwise every window starts from zeros.
        params, opt_state, loss_sum, loss, final = update(
            state.params, state.opt_state, state.loss_sum, carry, ids, starts, state.step
        )
        state = state.replace(
            params=params, opt_state=opt_state, loss_sum=loss_sum, step=state.step + 1,
            epoch_step=state.epoch_step + 1, carry=final if config.train.stateful else state.carry,
        )
        return state, loss

    return step

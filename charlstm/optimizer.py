"""The optimizer a config asks for: its learning-rate schedule, clipping, weight decay and weight average."""

import ml_collections
import optax

from charlstm import averaging


def make_optimizer(train: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """AdamW (Adam when weight_decay is 0) with the configured schedule over `total_steps`,
    after optional linear warm-up, on gradients clipped to a global norm (0 = no clipping),
    and the weights' moving average when train.average_decay > 0 (charlstm.averaging)."""
    peak, warmup = train.learning_rate, train.warmup_steps
    if train.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
    else:
        schedule = optax.constant_schedule(peak)
    if warmup:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), schedule], [warmup])
    adam = optax.adamw(schedule, weight_decay=train.weight_decay) if train.weight_decay else optax.adam(schedule)
    tx = optax.chain(optax.clip_by_global_norm(train.clip_norm), adam) if train.clip_norm else adam
    return optax.chain(tx, averaging.track_average(train.average_decay)) if train.average_decay else tx

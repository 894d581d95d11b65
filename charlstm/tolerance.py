"""How far a reproduction's per-epoch number may be from the original's before it is another run (reproduce.py).

A number's tolerance is the larger of two bounds; beyond both, the reproduction diverged.

Rounding. A float32 operation rounds with a relative error of at most 2^-24; the same sums in another order
(another thread count, CPU kernel or vector width) differ by a few of those. Every training step starts from
weights that carry the earlier steps' differences and adds its own, so after s steps a value may be off by
about s * eps32 * |value| (eps32 = 2^-23) where training does not amplify them: TOLERANCE_FACTOR * s * eps32 *
max(|value|, 1). For the weights the value is their L2 norm and the difference the norm of their difference.

Resolution. Training does amplify them: its dynamics are chaotic, and one rounding grows by orders of
magnitude (configs/obama.py with XLA instead of the CPU kernel: val_bpc 2e-7 apart at epoch 1, 8e-6 at epoch
10, 1.8e-3 at epoch 29, weights 11% of their norm apart) until the two runs are as far apart as two seeds. What
then tells a real change from rounding is whether the metric can tell the two numbers apart. A loss is the mean
of n per-character NLLs; its standard error, std / sqrt(n), is how finely it measures the model's expected
loss, and a difference below it is one the text cannot resolve. The std is measured once, on the original's
best checkpoint, its validation text and per-epoch protocol; n is the characters scored (val_loss; val_bpc in
bits) or trained per epoch (train_loss, with the validation std: the text is of the same kind, and the spread
of the training NLL is not recorded). Neighbouring characters' NLLs correlate, so the true standard error is
larger (on obama, block means of 100 to 2000 characters give 1.5x to 2.2x): this tolerance errs on the strict
side. The paired difference of the two models' NLLs, character by character, would resolve far finer and call
every reproduction that rounded differently diverged once chaos has made it another model.

The resolution does not change over a run and the rounding bound grows with the steps, so the resolution
decides until the rounding bound passes it (on obama it decides at every epoch: 9.6e-3 nats against 7.8e-4
after 1,140 steps); rounding decides long runs on large validation texts. On obama the rounding differences
end 8x below the tolerance after 30 epochs, while another seed is beyond it from epoch 1 on; at epoch 30 that
seed's val_bpc is within it, its train_loss 4x beyond (1.3e-2 nats): a run long enough for rounding to grow
to the differences between two seeds may be called diverged through its train_loss.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from charlstm import data, evaluate, trained_run

EPS32 = float(np.finfo(np.float32).eps)
# How far training may amplify rounding differences beyond one float32 eps per step. configs/tiny.py, 3 epochs,
# the CPU kernel against XLA: the losses came within 0.4% of the tolerance this gives, the weights 14%.
TOLERANCE_FACTOR = 4
RULE = (f"the larger of {TOLERANCE_FACTOR} x steps trained x float32 eps x max(|value|, 1) (rounding) and the "
        "number's standard error (resolution)")


def rounding(value: float, steps: int) -> float:
    """How far a value `steps` training steps in may be from the original's through rounding alone."""
    return TOLERANCE_FACTOR * max(steps, 1) * EPS32 * max(abs(value), 1.0)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How finely the per-epoch losses measure a model: the spread of its per-character NLL and their counts."""

    step: int  # The original's checkpoint (its best) the spread was measured on.
    protocol: str  # The per-epoch eval.protocol it was scored under.
    nll_std: float  # Sample standard deviation of the per-character validation NLL, in nats.
    val_chars: int  # Characters each epoch's val_loss averages.
    train_chars: int  # Characters each epoch's train_loss averages (an epoch may train one batch fewer).

    @classmethod
    def of_nll(cls, nll: np.ndarray, train_chars: int, step: int, protocol: str) -> "Resolution":
        """The resolution of per-character NLLs `[n]`, summed in float64 so a long text loses no digits."""
        return cls(step, protocol, float(np.std(nll, dtype=np.float64, ddof=1)), len(nll), train_chars)

    def standard_error(self, field: str) -> float:
        """The standard error of metrics.jsonl's `field`; 0 for a field that is not a mean loss."""
        chars = {"train_loss": self.train_chars, "val_loss": self.val_chars, "val_bpc": self.val_chars}
        if field not in chars:
            return 0.0
        nats = self.nll_std / math.sqrt(chars[field])
        return evaluate.bits_per_char(nats) if field == "val_bpc" else nats

    def tolerance(self, field: str, value: float, steps: int) -> float:
        """How far `field`'s `value`, `steps` steps in, may be from the original's: rounding or resolution."""
        return max(rounding(value, steps), self.standard_error(field))

    def to_json(self) -> dict:
        """The resolution's fields and the standard errors they give, for the report."""
        errors = {f: self.standard_error(f) for f in ("train_loss", "val_loss", "val_bpc")}
        return {**dataclasses.asdict(self), "standard_errors": errors}


def measure(original: Path) -> Resolution:
    """The resolution of run `original`'s per-epoch losses, from its best checkpoint on its validation text
    under its per-epoch protocol; re-reads the corpus and refuses one that changed since training."""
    run = trained_run.load(original, "best")
    config, corpus = run.config, run.corpus()
    scoring = evaluate.Scoring.from_config(config, train_ids=corpus.train_ids)
    nll = evaluate.per_char_nll(run.graphdef, run.params, evaluate.scored_ids(corpus.val_ids, config), scoring)
    length, batch, objective = config.data.seq_length, config.train.batch_size, config.train.objective
    train_chars = data.steps_per_epoch(len(corpus.train_ids), length, batch, objective) * batch
    return Resolution.of_nll(nll, train_chars * data.targets_per_window(length, objective), run.step, scoring.protocol)

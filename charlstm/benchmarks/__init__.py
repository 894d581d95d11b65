"""What scripts/benchmark.py measures, one module per section, each section a function of plain values.

- `timing.py`: timing calls and steps (fastest, median, steps in turns), the matmul peak.
- `generation.py`: the stateful sampler (batched and streamed) against the Keras lab's way of generating.
- `exports.py`: the NumPy and onnxruntime samplers of a run's exports beside the JAX sampler.
- `evaluation.py`: each evaluation protocol and dynamic evaluation.
- `training.py`: the train step beside the LSTM's other implementations and PyTorch's step; the step with
  each training method beside the plain one.
- `phases.py`: one train step split into its phases, ours beside PyTorch's.
- `torch_step.py`: the same train step in PyTorch, where it is installed, whole or split into phases.
- `keras_lab.py`: the Keras lab's step (scripts/benchmark_keras_lab.py) in rounds beside ours.

Speed does not depend on the weights or the text, so a section runs on a fresh model and random ids
unless it is given a trained run (`Model.trained`).
"""

from typing import NamedTuple

import ml_collections
from flax import nnx

from charlstm import trained_run
from charlstm.model import create_model, split_model

# The Obama run's vocabulary size, for freshly initialised models.
OBAMA_VOCAB = 45


class Model(NamedTuple):
    """A model to time: its graph definition, params, vocabulary size and seq_length."""

    graphdef: nnx.GraphDef
    params: dict
    vocab_size: int
    seq_length: int

    @classmethod
    def trained(cls, workdir: str) -> "Model":
        """The best checkpoint of the run in `workdir`."""
        run = trained_run.load(workdir)
        return cls(run.graphdef, run.params, run.vocab.size, run.config.data.seq_length)

    @classmethod
    def fresh(cls, config: ml_collections.ConfigDict, vocab_size: int = OBAMA_VOCAB) -> "Model":
        """A freshly initialised model in `config`'s shapes (by default the Obama run's)."""
        return cls(*split_model(create_model(config, vocab_size)), vocab_size, config.data.seq_length)

"""The train step in PyTorch (the [bench] extra), to time beside ours on the same kind of device."""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections

from charlstm.benchmarks.timing import clocked

TORCH_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}  # Our cell -> its torch.nn module.


def torch_device() -> str | None:
    """Where PyTorch runs the same step as ours: 'cpu' when jax runs on the CPU, 'cuda' when jax runs on
    a GPU and torch has CUDA; None when torch is not installed or cannot run where jax does."""
    try:
        import torch
    except ImportError:
        return None
    if jax.default_backend() == "cpu":
        return "cpu"
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else None


class TorchModel(NamedTuple):
    """Our model in PyTorch on random windows: embedding (or one-hot input), recurrent layers, head, Adam."""

    embed: Any
    rnn: Any
    head: Any
    optimizer: Any
    windows: Any  # Random character ids `[batch, seq_length + 1]`.
    device: str

    def features(self, vocab_size: int):
        """The top layer's outputs `[batch, time, units]`."""
        import torch

        inputs = self.windows[:, :-1]
        x = self.embed(inputs) if self.embed else torch.nn.functional.one_hot(inputs, vocab_size).float()
        return self.rnn(x)[0]

    def loss(self, hs, objective: str, vocab_size: int):
        """The mean cross-entropy of the head's logits for top outputs `hs`, as our objective asks."""
        import torch

        if objective == "all":
            logits, targets = self.head(hs).reshape(-1, vocab_size), self.windows[:, 1:].reshape(-1)
        else:
            logits, targets = self.head(hs[:, -1]), self.windows[:, -1]
        return torch.nn.functional.cross_entropy(logits, targets)

    def update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.synchronize()

    def synchronize(self) -> None:
        if self.device == "cuda":  # CUDA runs asynchronously: a phase's time includes its kernels.
            import torch

            torch.cuda.synchronize()


def torch_model(config: ml_collections.ConfigDict, vocab_size: int) -> TorchModel | None:
    """Our model in PyTorch on the same kind of device as ours, or None where it cannot run
    (torch_device) or torch lacks the cell (the mogrifier)."""
    device = torch_device()
    if device is None or config.model.cell not in TORCH_CELLS:
        return None
    import torch

    m, batch, length = config.model, config.train.batch_size, config.data.seq_length
    torch.manual_seed(config.seed)
    embed = torch.nn.Embedding(vocab_size, m.embed_dim).to(device) if m.embed_dim else None
    rnn_type = getattr(torch.nn, TORCH_CELLS[m.cell])
    rnn = rnn_type(m.embed_dim or vocab_size, m.units, m.num_layers, batch_first=True).to(device)
    head = torch.nn.Linear(m.units, vocab_size).to(device)
    modules = [module for module in (embed, rnn, head) if module is not None]
    optimizer = torch.optim.Adam([p for module in modules for p in module.parameters()], config.train.learning_rate)
    windows = torch.randint(vocab_size, (batch, length + 1), device=device)
    return TorchModel(embed, rnn, head, optimizer, windows, device)


def torch_train_step(config: ml_collections.ConfigDict, vocab_size: int) -> Callable[[int], Any] | None:
    """The same step as ours in PyTorch (torch_model), or None where it cannot run."""
    model = torch_model(config, vocab_size)
    if model is None:
        return None

    def step(i: int) -> None:
        model.loss(model.features(vocab_size), config.train.objective, vocab_size).backward()
        model.update()

    return step


def torch_split_step(config: ml_collections.ConfigDict, vocab_size: int) -> Callable[[], dict[str, float]]:
    """The same step in PyTorch split into charlstm.benchmarks.phases' phases at the top outputs (their
    gradient is carried from the head's backward to the layers' by hand), with the seconds of each."""
    import torch

    model = torch_model(config, vocab_size)
    rows, units = config.train.batch_size * config.data.seq_length, config.model.units
    hs_flat, dz_flat = torch.ones(rows, units, device=model.device), torch.ones(rows, 4 * units, device=model.device)

    def step() -> dict[str, float]:
        phases = {}
        began = time.perf_counter()
        hs = model.features(vocab_size)
        model.synchronize()
        began = clocked(phases, "forward", began)
        top = hs.detach().requires_grad_()
        model.loss(top, config.train.objective, vocab_size).backward()
        model.synchronize()
        began = clocked(phases, "head_and_loss", began)
        hs.backward(top.grad)
        model.synchronize()
        began = clocked(phases, "backward", began)
        model.update()
        began = clocked(phases, "optimizer", began)
        torch.mm(hs_flat.T, dz_flat)
        model.synchronize()
        clocked(phases, "weight_gradient_matmul", began)
        return phases

    return step

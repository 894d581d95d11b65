"""The train step in PyTorch (the [bench] extra), to time beside ours on the same kind of device."""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

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


def torch_train_step(config: ml_collections.ConfigDict, vocab_size: int) -> Callable[[int], Any] | None:
    """The same step in PyTorch (one-hot or embedded input, nn.LSTM/GRU/RNN, Linear head, Adam) on the
    same kind of device as ours, or None where it cannot run (torch_device) or torch lacks the cell (the
    mogrifier)."""
    device = torch_device()
    if device is None or config.model.cell not in TORCH_CELLS:
        return None
    import torch

    m, batch, length = config.model, config.train.batch_size, config.data.seq_length
    torch.manual_seed(config.seed)
    embed = torch.nn.Embedding(vocab_size, m.embed_dim) if m.embed_dim else None
    rnn_type = getattr(torch.nn, TORCH_CELLS[m.cell])
    rnn = rnn_type(m.embed_dim or vocab_size, m.units, m.num_layers, batch_first=True)
    head = torch.nn.Linear(m.units, vocab_size)
    modules = [module.to(device) for module in (embed, rnn, head) if module is not None]
    optimizer = torch.optim.Adam([p for module in modules for p in module.parameters()], config.train.learning_rate)
    windows = torch.randint(vocab_size, (batch, length + 1), device=device)

    def step(i: int) -> None:
        inputs = windows[:, :-1]
        x = embed(inputs) if embed else torch.nn.functional.one_hot(inputs, vocab_size).float()
        hs, _ = rnn(x)
        if config.train.objective == "all":
            logits, targets = head(hs).reshape(-1, vocab_size), windows[:, 1:].reshape(-1)
        else:
            logits, targets = head(hs[:, -1]), windows[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: the step's time includes its kernels.

    return step

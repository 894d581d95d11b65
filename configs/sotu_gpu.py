"""Every State of the Union address on one GPU: 3 LSTM layers of 1024 units, about 10 minutes.

    python scripts/train.py --config configs/sotu_gpu.py

The corpus of configs/sotu.py (10.7 million training characters) for a model
it can feed: about 21M parameters, float32 so that the LSTM layers run cuDNN
(docs/speed.md), batch 256 (any device count that divides it splits each
batch; docs/scaling-out.md), 8 epochs, Adam with a cosine decay, dropout
between layers against the two centuries of older prose the model could
memorise. Sized from an estimate of cuDNN's speed on one recent GPU (a few
hundred thousand characters per second at this width), not measured: no GPU
has run it yet. On a CPU a step takes tens of seconds: use configs/sotu.py.
"""

from pathlib import Path

from charlstm import config as config_lib


def get_config():
    config = config_lib.from_file(Path(__file__).with_name("sotu.py"))
    config.model.units = 1024
    config.model.num_layers = 3
    config.model.embed_dim = 64
    config.model.dropout = 0.2
    config.train.batch_size = 256
    config.train.epochs = 8
    config.train.recent_epochs = 0  # sotu.py's last pass over the latest text is not measured at this size yet.
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 500
    config.eval.final_protocols = ("window", "stream")  # Cheap on a GPU.
    return config

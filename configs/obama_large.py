"""The Obama corpus on a GPU: a 3-layer, 512-unit LSTM with a learned embedding, dropout and batch 128.

    python scripts/train.py --config configs/obama_large.py

Meant for one GPU with 8 GB or more (any recent NVIDIA card; an A100 or H100 is
plenty), or several devices that split each batch of 128 (1, 2, 4, 8 or 16 of
them; README, "Scaling out"). About 5.4M parameters against 245,650 training
characters, so it leans on regularisation: dropout 0.3 between layers,
DropConnect 0.2 on the recurrent kernels, weight decay, and early stopping
after 15 epochs without a better val_loss. 19 steps per epoch, at most 100
epochs, a cosine learning-rate decay over all of them.

Not measured on a GPU (none was available while it was written); on the 2-core
CPU it was written on, a step takes several seconds, so use
configs/obama.py there.
"""

from pathlib import Path

from charlstm import config as config_lib


def get_config():
    config = config_lib.from_file(Path(__file__).with_name("default.py"))
    config.model.units = 512
    config.model.num_layers = 3
    config.model.embed_dim = 64
    config.model.dropout = 0.3
    config.model.weight_dropout = 0.2
    config.train.batch_size = 128
    config.train.epochs = 100
    config.train.learning_rate = 2e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 100
    config.train.clip_norm = 1.0
    config.train.weight_decay = 0.1
    config.train.patience = 15
    config.train.dtype = "bfloat16"  # Mixed precision: GPU/TPU matmuls in bfloat16, params in float32.
    return config

"""Your own large text file (tens to hundreds of MB) on one GPU or a TPU host: a 2-layer, 512-unit LSTM.

    python scripts/train.py --config configs/text_file.py --config.data.path=corpus.txt --workdir runs/mine

Meant for one GPU with 16 GB or more (A100, H100, L4) or one TPU v4/v5e host;
several devices split each batch (docs/scaling-out.md). The text is kept as
it is: every character, case and all (data.keep_chars=""), so the vocabulary
is whatever the file holds. Of 200 MB, 198 MB train: one epoch is about 6,000
steps of 256 windows of 128 characters. Validation is the last 1%; each
evaluation scores its first 200,000 characters (eval.max_chars), each from its
own 128-character window: about as much compute as 260 training steps, 4% of
an epoch. Without --config.data.path the run stops with a one-line error.

Not measured on a GPU or TPU (none was available while it was written). On the
2-core CPU it was written on, loading a 200 MB corpus takes under 2 GiB of
memory (docs/scaling-out.md, from scripts/benchmark_memory.py).
"""

from charlstm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.data.corpus = ""  # No built-in corpus: --config.data.path is required.
    config.data.keep_chars = ""
    config.data.lowercase = False
    config.data.val_fraction = 0.01
    config.data.seq_length = 128
    config.model.units = 512
    config.model.num_layers = 2
    config.model.embed_dim = 64
    config.model.dropout = 0.1
    config.train.batch_size = 256
    config.train.epochs = 5
    config.train.learning_rate = 2e-3
    config.train.schedule = "cosine"
    config.train.warmup_steps = 500
    config.train.clip_norm = 1.0
    config.train.log_every_steps = 100
    config.eval.batch_size = 1024
    config.eval.max_chars = 200_000
    config.train.dtype = "bfloat16"  # Mixed precision: GPU/TPU matmuls in bfloat16, params in float32.
    return config

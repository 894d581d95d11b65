"""Every State of the Union address, 1790 to the latest, on a 2-core CPU in a 10-minute command.

    python scripts/train.py --config configs/sotu.py

About 10.7 million training characters, 44 times the Obama corpus: a 256-unit
LSTM sees each of them four times in ten minutes, too few passes to overfit,
so it trains without dropout, statefully (the state carried between
consecutive windows), at batch 64 with a cosine-decayed learning rate.
Validation is the last 10% of the text (the addresses since about 2000).
Per epoch it is scored by the cheap 'segments' protocol on the whole
validation text; at the end the best checkpoint is scored by 'stream' only:
the exact 'window' metric on 1.2 million characters would take about six
minutes at this width (`python scripts/evaluate.py --workdir runs/sotu
--protocol window` runs it).

Measured on an otherwise idle 2-core CPU (the command above): val_bpc 1.9326
(stream, epoch 4) after 536 s of training, the whole command 9 min 51 s,
peak RSS 983 MiB. Interpolated with Kneser-Ney's best order on the same
split, 8 (docs/results.md has the baselines and this model's curve), `python
scripts/evaluate.py --workdir runs/sotu --protocol stream --mix_ngram 8`
gives 1.7787.
"""

from charlstm import config as config_lib


def get_config():
    config = config_lib.default_config()
    config.data.corpus = "sotu"
    config.model.units = 256
    config.train.epochs = 4
    config.train.learning_rate = 2e-2
    config.train.stateful = True
    config.train.schedule = "cosine"
    config.train.warmup_steps = 200
    config.train.clip_norm = 1.0
    config.eval.final_protocols = ("stream",)
    return config

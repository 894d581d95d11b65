"""The headline run: a 128-unit LSTM on Obama's State of the Union addresses.

    python scripts/train.py --config configs/obama.py

PLACEHOLDER: timing and val_bpc to be measured.
"""

from pathlib import Path

from charlstm import config as config_lib


def get_config():
    config = config_lib.from_file(Path(__file__).with_name("default.py"))
    return config

"""Every config field at its default; the fields' meanings and units are in charlstm/default_config.py.

    python scripts/train.py --config configs/default.py --workdir runs/default
"""

from charlstm.default_config import get_config

__all__ = ["get_config"]

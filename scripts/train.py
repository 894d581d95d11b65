"""Trains a character-level model on all local devices; re-running the same command resumes.

    python scripts/train.py --config configs/obama.py
    python scripts/train.py --config configs/obama.py --config.train.epochs=3 --workdir runs/try
    python scripts/train.py --config runs/obama --workdir runs/obama_again    # the config runs/obama saved

Several processes (hosts): start the same command in each with --distributed
(docs/scaling-out.md).
"""

import shlex
import sys

from absl import flags

from charlstm import cli, parallel
from charlstm.train import train_and_evaluate

_CONFIG = cli.define_config_source("Config file (configs/obama.py), or a run folder or its config.json.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; default runs/<config name>.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "One of several processes: start jax.distributed (also on when JAX_COORDINATOR_ADDRESS is set).",
)
flags.mark_flags_as_required(["config"])


def main() -> None:
    parallel.initialize_distributed(_DISTRIBUTED.value)
    command = " ".join(shlex.quote(arg) for arg in sys.argv)
    train_and_evaluate(_CONFIG.value, _WORKDIR.value or f"runs/{cli.config_name()}", command)


if __name__ == "__main__":
    cli.run(main, "pass settings as --config.FIELD=VALUE")

"""Exports a trained run to a file that runs without JAX (docs/export.md).

    python scripts/export.py --workdir runs/obama --output obama.npz
    python scripts/export.py --workdir runs/obama --output obama.onnx --format onnx

`.npz`: the weights, vocabulary, cleaning rules and config, which charlstm.portable samples
with NumPy alone. `.onnx`: the one-step function (id, h, c) -> (logits, h, c) for onnxruntime
(needs `pip install 'charlstm[export]'`). The weights are those generate.py samples: the
checkpoint's, or their average when the run keeps one. The run folder is only read.
"""

import os

from absl import flags

from charlstm import cli, export

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_OUTPUT = flags.DEFINE_string("output", None, "The file to write, e.g. obama.npz or obama.onnx.")
_FORMAT = flags.DEFINE_enum("format", None, export.FORMATS, "What to write; default: from --output's suffix.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
flags.mark_flags_as_required(["workdir", "output"])


def main() -> None:
    written = export.export_run(_WORKDIR.value, _OUTPUT.value, _FORMAT.value or "", _CHECKPOINT.value)
    print(f"wrote {_OUTPUT.value} ({written}, {os.path.getsize(_OUTPUT.value):,} bytes)")


if __name__ == "__main__":
    cli.run(main, "pass the run folder as --workdir and the file as --output")

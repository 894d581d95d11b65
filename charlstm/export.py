"""A trained run as files that run without JAX: a `.npz` for charlstm.portable, or ONNX's one-step function.

Both are written from the same weights (the averaged ones when the run keeps an average, as
generate.py samples them) through charlstm.portable.Model, whose checks make sure every weight
of the model has its place in the format. The ONNX graph is written with the `onnx` package's
helpers, node by node, as the portable cells compute: (id `[batch]`, h and c `[layers, batch,
units]`) -> (logits `[batch, vocab]`, h_out, c_out); GRU and RNN models have no c.
"""

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from charlstm import config as config_lib
from charlstm import portable, trained_run
from charlstm.data import Vocab
from charlstm.errors import CharLSTMError

FORMATS = ("npz", "onnx")
ONNX_OPSET = 17  # Split without a num_outputs attribute: opsets 13 to 17.
ONNX_IR_VERSION = 8  # What ONNX opset 17 came with; runtimes from 2021 on read it.


def flat_arrays(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The model's parameter tree as NumPy arrays named by their path: {'layers/0/bias': ..., ...}."""
    arrays = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        arrays |= flat_arrays(value, f"{name}/") if isinstance(value, dict) else {name: np.asarray(value)}
    return arrays


def ordinary_head(params: dict) -> dict:
    """`params` with a tied head (model.TiedHead: logits = (h P) E^T + b) written as the ordinary head the
    format holds, kernel = P E^T `[units, vocab]` (computed in float64), so that readers need not know ties."""
    head = params["head"]
    if "kernel" in head:
        return params
    embedding_t = np.asarray(params["embed"]["embedding"], np.float64).T
    kernel = embedding_t if "projection" not in head else np.asarray(head["projection"], np.float64) @ embedding_t
    return {**params, "head": {"kernel": kernel.astype(np.float32), "bias": head["bias"]}}


def portable_model(config: ml_collections.ConfigDict, vocab: Vocab, params: dict, source: dict) -> portable.Model:
    """The export of a model (its config, vocabulary and params), `source` saying where it came from."""
    m = config.model
    manifest = {
        "format": portable.FORMAT, "format_version": portable.FORMAT_VERSION,
        "cell": m.cell, "num_layers": m.num_layers, "units": m.units, "embed_dim": m.embed_dim,
        "mogrifier_rounds": m.mogrifier_rounds, "vocab": vocab.chars,
        "cleaning": {"keep_chars": config.data.keep_chars, "lowercase": config.data.lowercase},
        "config": json.loads(config_lib.to_json(config)), "source": source,
    }
    arrays = flat_arrays(ordinary_head(params))
    model = portable.Model(manifest, arrays)  # Refuses a cell, or weights, that the format lacks.
    if unknown := sorted(set(arrays) - set(portable.array_shapes(manifest))):
        raise CharLSTMError(f"the model has weights {unknown} the export format does not hold: update charlstm")
    return model


def write_atomically(path: Path, contents: bytes) -> None:
    """Writes `contents` to a neighbour of `path`, then renames it: a failed write leaves no half file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(contents)
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise CharLSTMError(f"could not write --output={path}: {e.strerror}: give a writable file path") from None


def npz_bytes(model: portable.Model) -> bytes:
    """The `.npz` file: the weights and the manifest's JSON as a uint8 array (loads with allow_pickle=False)."""
    manifest = np.frombuffer(json.dumps(model.manifest).encode("utf-8"), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **{portable.MANIFEST: manifest}, **model.arrays)
    return buffer.getvalue()


class OnnxGraph:
    """Nodes and constant tensors of an ONNX graph, each node's outputs named in order of creation."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def const(self, array: np.ndarray, name: str = "") -> str:
        """Adds a constant tensor (a weight keeps its name in the model); returns its name."""
        name = name or f"const_{len(self.initializers)}"
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str = "", **attributes):
        """Adds a node; returns its output's name, or a list of `outputs` names."""
        names = [name] if name else [f"{op_type}_{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names


def onnx_lstm(g: OnnxGraph, kernel: str, carry: list[str], x_proj: str) -> list[str]:
    """charlstm.portable.lstm_cell as ONNX nodes."""
    h, c = carry
    i, f, cell, o = g.op("Split", g.op("Add", x_proj, g.op("MatMul", h, kernel)), outputs=4, axis=-1)
    c = g.op("Add", g.op("Mul", g.op("Sigmoid", f), c), g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", cell)))
    return [g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c)), c]


def onnx_gru(g: OnnxGraph, kernel: str, carry: list[str], x_proj: str) -> list[str]:
    """charlstm.portable.gru_cell as ONNX nodes."""
    (h,) = carry
    x_r, x_z, x_n = g.op("Split", x_proj, outputs=3, axis=-1)
    h_r, h_z, h_n = g.op("Split", g.op("MatMul", h, kernel), outputs=3, axis=-1)
    r, z = g.op("Sigmoid", g.op("Add", x_r, h_r)), g.op("Sigmoid", g.op("Add", x_z, h_z))
    n = g.op("Tanh", g.op("Add", x_n, g.op("Mul", r, h_n)))
    keep_new = g.op("Sub", g.const(np.float32(1)), z)
    return [g.op("Add", g.op("Mul", keep_new, n), g.op("Mul", z, h))]


def onnx_rnn(g: OnnxGraph, kernel: str, carry: list[str], x_proj: str) -> list[str]:
    """charlstm.portable.rnn_cell as ONNX nodes."""
    return [g.op("Tanh", g.op("Add", x_proj, g.op("MatMul", carry[0], kernel)))]


ONNX_CELLS = {"lstm": onnx_lstm, "gru": onnx_gru, "rnn": onnx_rnn}


def import_onnx():
    """The onnx package, or a CharLSTMError saying how to install it."""
    try:
        import onnx  # Optional (the export extra): only this format needs it.
        import onnx.numpy_helper
    except ImportError:
        raise CharLSTMError("the ONNX export needs the onnx package: pip install 'charlstm[export]'") from None
    return onnx


def onnx_step(g: OnnxGraph, model: portable.Model, state_names: tuple[str, ...]) -> None:
    """Adds the one-step function's nodes to `g`: inputs `id` and `state_names`, outputs `logits` and
    `<state name>_out`. Layer l's carry is row l of each state input."""
    m, weight = model.manifest, lambda name: g.const(model.arrays[name], name)
    x = g.op("Gather", weight("embed/embedding"), "id") if m["embed_dim"] else None
    new_state = {name: [] for name in state_names}
    for i in range(m["num_layers"]):
        carry = [g.op("Gather", name, g.const(np.int64(i)), axis=0) for name in state_names]
        if x is None:  # The first layer's table: one row per character id.
            x_proj = g.op("Gather", g.const(model.id_table, "layers/0/id_table"), "id")
        else:
            x_proj = g.op("Add", g.op("MatMul", x, weight(f"layers/{i}/input_kernel")), weight(f"layers/{i}/bias"))
        carry = ONNX_CELLS[m["cell"]](g, weight(f"layers/{i}/recurrent_kernel"), carry, x_proj)
        for name, value in zip(state_names, carry):
            new_state[name].append(g.op("Unsqueeze", value, g.const(np.array([0]))))
        x = carry[0]
    g.op("Add", g.op("MatMul", x, weight("head/kernel")), weight("head/bias"), name="logits")
    for name in state_names:
        g.op("Concat", *new_state[name], axis=0, name=f"{name}_out")


def onnx_bytes(model: portable.Model) -> bytes:
    """The one-step function as a checked ONNX model; the manifest and vocabulary are in its metadata."""
    onnx, m = import_onnx(), model.manifest
    if m["cell"] not in ONNX_CELLS:
        raise CharLSTMError(f"the ONNX export does not know the cell {m['cell']!r}: export --format npz instead")
    g, float32 = OnnxGraph(onnx), onnx.TensorProto.FLOAT
    state_names = ("h", "c")[: portable.CELLS[m["cell"]][2]]
    onnx_step(g, model, state_names)
    state_shape = [m["num_layers"], "batch", m["units"]]
    inputs = [onnx.helper.make_tensor_value_info("id", onnx.TensorProto.INT64, ["batch"])]
    inputs += [onnx.helper.make_tensor_value_info(name, float32, state_shape) for name in state_names]
    outputs = [onnx.helper.make_tensor_value_info("logits", float32, ["batch", len(m["vocab"])])]
    outputs += [onnx.helper.make_tensor_value_info(f"{name}_out", float32, state_shape) for name in state_names]
    graph = onnx.helper.make_graph(g.nodes, "charlstm_step", inputs, outputs, g.initializers)
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION,
        producer_name="charlstm",
    )
    onnx.helper.set_model_props(proto, {"vocab": m["vocab"], portable.MANIFEST: json.dumps(m)})
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


WRITERS: dict[str, Callable[[portable.Model], bytes]] = {"npz": npz_bytes, "onnx": onnx_bytes}


def output_format(output: str | Path, format_name: str) -> str:
    """`format_name`, or with '' the format `output`'s suffix names; refuses a mismatch."""
    suffix = Path(output).suffix.lstrip(".")
    if format_name and format_name not in FORMATS:
        raise CharLSTMError(f"--format={format_name!r} is unknown: use one of {', '.join(FORMATS)}")
    if not format_name and suffix not in FORMATS:
        raise CharLSTMError(f"--output={str(output)!r} names no format: end it in .npz or .onnx, or pass --format")
    if format_name and suffix in FORMATS and suffix != format_name:
        raise CharLSTMError(f"--output={str(output)!r} ends in .{suffix} but --format={format_name}: make them agree")
    return format_name or suffix


def export_run(workdir: str | Path, output: str | Path, format_name: str = "", checkpoint: str = "best") -> str:
    """Writes the run in `workdir` at `checkpoint` to `output` as `format_name` ('' = from the suffix: .npz or
    .onnx); returns the format written. The run folder is only read."""
    format_name, output = output_format(output, format_name), Path(output)
    if output.resolve().is_relative_to(Path(workdir).resolve()):
        raise CharLSTMError(f"--output={str(output)!r} is inside the run folder: write the export somewhere else")
    run = trained_run.load(workdir, checkpoint)
    model = portable_model(run.config, run.vocab, run.params, {"run": str(run.path), "step": run.step})
    write_atomically(output, WRITERS[format_name](model))
    return format_name

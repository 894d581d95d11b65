"""An exported model sampled with NumPy alone: nothing here imports JAX, Flax or Optax.

An export (`scripts/export.py`, charlstm.export) is one `.npz` file that loads with
`allow_pickle=False`: the weights under their names in the model (`layers/0/input_kernel`,
`head/kernel`, ...) and `manifest`, UTF-8 JSON as uint8 bytes, giving the format and its
version, the cell, the vocabulary, the cleaning rules and the run's whole config. The cells
below are charlstm/model.py's, gate for gate, so the probabilities agree with the JAX model's
to float32 rounding; the random numbers are NumPy's, so a sampled text differs from
generate.py's for the same seed, except at temperature 0 (greedy), where they are equal.

    model = portable.load("obama.npz")
    print(model.generate("the state of our union is", length=200, temperature=0.8, seed=1))
"""

import dataclasses
import functools
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from charlstm.errors import CharLSTMError

FORMAT = "charlstm-export"
FORMAT_VERSION = 1  # Raised when a change would make older readers misread a file.
MANIFEST = "manifest"  # The array holding the manifest's JSON bytes.
MANIFEST_KEYS = ("cell", "num_layers", "units", "embed_dim", "vocab", "cleaning", "config")

Carry = tuple[np.ndarray, ...]  # (h, c) for an LSTM, (h,) for a GRU or RNN; each [batch, units].


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function as the LSTM cell computes it, (1 + tanh(x/2)) / 2: no overflow for large |x|."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def lstm_cell(recurrent_kernel: np.ndarray, carry: Carry, x_proj: np.ndarray) -> Carry:
    """charlstm.lstm.cell's step: gates (input, forget, cell, output); `x_proj` includes the bias."""
    h, c = carry
    i, f, g, o = np.split(x_proj + h @ recurrent_kernel, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def gru_cell(recurrent_kernel: np.ndarray, carry: Carry, x_proj: np.ndarray) -> Carry:
    """charlstm.model.gru_cell: gates (reset, update, candidate), reset applied after the recurrent matmul."""
    (h,) = carry
    x_r, x_z, x_n = np.split(x_proj, 3, axis=-1)
    h_r, h_z, h_n = np.split(h @ recurrent_kernel, 3, axis=-1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)


def rnn_cell(recurrent_kernel: np.ndarray, carry: Carry, x_proj: np.ndarray) -> Carry:
    """charlstm.model.rnn_cell: h = tanh(x W + h U + b)."""
    (h,) = carry
    return (np.tanh(x_proj + h @ recurrent_kernel),)


def mogrify(kernels: list[np.ndarray], x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """charlstm.cells.mogrifier.mogrify: x `[batch, in]` scaled by 2 sigmoid(h Q) on even rounds, h `[batch,
    units]` by 2 sigmoid(x R) on odd ones, before the mogrifier's LSTM step."""
    for i, kernel in enumerate(kernels):
        if i % 2 == 0:
            x = 2 * sigmoid(h @ kernel) * x
        else:
            h = 2 * sigmoid(x @ kernel) * h
    return x, h


# Cell name -> (gates per unit, step function, carry size), as charlstm.cells.CELLS; the mogrifier's rounds
# (mogrify) come before its LSTM step.
CELLS = {"lstm": (4, lstm_cell, 2), "gru": (3, gru_cell, 1), "rnn": (1, rnn_cell, 1), "mogrifier": (4, lstm_cell, 2)}


def rounds(manifest: dict) -> int:
    """The mogrifier's rounds per layer; 0 for other cells and for exports written before it."""
    return manifest.get("mogrifier_rounds", 0)


def array_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    """Every weight array an export of `manifest`'s model holds, by name, with its shape."""
    vocab, units, embed = len(manifest["vocab"]), manifest["units"], manifest["embed_dim"]
    gates = CELLS[manifest["cell"]][0]
    shapes = {"embed/embedding": (vocab, embed)} if embed else {}
    for i in range(manifest["num_layers"]):
        n_in = (embed or vocab) if i == 0 else units
        shapes[f"layers/{i}/input_kernel"] = (n_in, gates * units)
        shapes[f"layers/{i}/recurrent_kernel"] = (units, gates * units)
        shapes[f"layers/{i}/bias"] = (gates * units,)
        for j in range(rounds(manifest)):
            shapes[f"layers/{i}/rounds/{j}"] = (units, n_in) if j % 2 == 0 else (n_in, units)
    return shapes | {"head/kernel": (units, vocab), "head/bias": (vocab,)}


def filter_logits(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """charlstm.sampling.filter_logits for one row `[vocab]`: -inf outside the top-k (0 = all) and outside
    the smallest set of most likely characters whose probability reaches `top_p`."""
    if 0 < top_k < len(logits):
        logits = np.where(logits < np.sort(logits)[-top_k], -np.inf, logits)
    ordered = np.sort(logits)[::-1]
    probs = np.exp(ordered - ordered[0])
    probs /= probs.sum()
    kept = np.cumsum(probs) - probs < top_p
    return np.where(logits < ordered[kept].min(), -np.inf, logits)


def next_id(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """One id drawn from logits `[vocab]`, as charlstm.sampling.sample_next draws it; temperature 0 = greedy."""
    if temperature == 0:
        return int(np.argmax(logits))
    weights = np.exp(filter_logits((logits - logits.max()) / temperature, top_k, top_p))
    cumulative = np.cumsum(weights, dtype=np.float64)
    # The first id whose cumulative weight exceeds u times the total; an id of weight 0 is never drawn.
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), len(logits) - 1))


@dataclasses.dataclass(frozen=True)
class Model:
    """An exported model: its manifest and weights, stepped one character at a time."""

    manifest: dict
    arrays: dict[str, np.ndarray]

    def __post_init__(self):
        cell = self.manifest.get("cell")
        if cell not in CELLS:
            raise CharLSTMError(
                f"the export's cell {cell!r} is not one the portable sampler knows ({', '.join(CELLS)}): "
                "sample it with scripts/generate.py, or update charlstm"
            )
        for name, shape in array_shapes(self.manifest).items():
            if name not in self.arrays or self.arrays[name].shape != shape:
                raise CharLSTMError(f"the export lacks the weights {name!r} of shape {shape}: export the run again")

    @functools.cached_property
    def id_table(self) -> np.ndarray:
        """`[vocab, gates*units]`: the first layer's input kernel with the bias added to each row."""
        return self.arrays["layers/0/input_kernel"] + self.arrays["layers/0/bias"]

    @property
    def chars(self) -> str:
        return self.manifest["vocab"]

    @property
    def config(self) -> dict:
        """The run's config as a nested dict (its JSON form)."""
        return self.manifest["config"]

    def initial_state(self, batch: int = 1) -> tuple[Carry, ...]:
        """Zeros: one carry per layer, each array `[batch, units]`."""
        zeros = np.zeros((batch, self.manifest["units"]), self.arrays["head/kernel"].dtype)
        return tuple((zeros,) * CELLS[self.manifest["cell"]][2] for _ in range(self.manifest["num_layers"]))

    def step(self, ids: np.ndarray, state: tuple[Carry, ...]) -> tuple[np.ndarray, tuple[Carry, ...]]:
        """One character per row: ids `[batch]` and the state -> next-character logits `[batch, vocab]`, new state.

        The first layer reads row `id` of its input kernel plus the bias (a one-hot input times the kernel),
        or, with an embedding, the embedding's row times the kernel. A mogrifier's rounds first scale its input
        (one-hot rows for ids) and h."""
        a, cell = self.arrays, CELLS[self.manifest["cell"]][1]
        ids, new_state = np.asarray(ids), []
        x = a["embed/embedding"][ids] if "embed/embedding" in a else None
        for i, carry in enumerate(state):
            if kernels := [a[f"layers/{i}/rounds/{j}"] for j in range(rounds(self.manifest))]:
                x_in = np.eye(len(self.chars), dtype=self.id_table.dtype)[ids] if x is None else x
                x, h = mogrify(kernels, x_in, carry[0])
                carry = (h, *carry[1:])
            x_proj = self.id_table[ids] if x is None else x @ a[f"layers/{i}/input_kernel"] + a[f"layers/{i}/bias"]
            carry = cell(a[f"layers/{i}/recurrent_kernel"], carry, x_proj)
            new_state.append(carry)
            x = carry[0]
        return x @ a["head/kernel"] + a["head/bias"], tuple(new_state)

    def feed(self, ids: np.ndarray, state: tuple[Carry, ...] | None = None) -> tuple[np.ndarray, tuple[Carry, ...]]:
        """Ids `[time]` (at least one) from `state` (None = zeros) -> the logits `[vocab]` after the last, the state."""
        if not len(ids):
            raise ValueError("feed() needs at least one id: the logits are those after the last")
        state = self.initial_state() if state is None else state
        for char_id in ids:
            logits, state = self.step(np.array([char_id]), state)
        return logits[0], state

    def encode(self, text: str, oov: str | None = None) -> np.ndarray:
        """Ids `[n]` of `text` cleaned as the training text was (the run's data.keep_chars and data.lowercase).

        Characters the cleaning keeps but the vocabulary lacks are an error, or dropped when `oov` (default:
        the run's sample.oov) is 'skip'."""
        cleaning, oov = self.manifest["cleaning"], oov or self.config["sample"]["oov"]
        if cleaning["keep_chars"]:
            text = re.sub(f"[^{cleaning['keep_chars']}]+", "", text)
        text = text.lower() if cleaning["lowercase"] else text
        if (missing := "".join(sorted(set(text) - set(self.chars)))) and oov != "skip":
            raise CharLSTMError(
                f"the text has characters {missing!r} that are not in the vocabulary {self.chars!r}: "
                "remove them, or pass oov='skip' to drop them"
            )
        return np.array([self.chars.index(c) for c in text if c not in missing], np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def generate(
        self, prompt: str, length: int | None = None, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, seed: int = 0,
    ) -> str:
        """`length` characters continuing `prompt`, cut after the run's sample.stop; None takes the run's
        sample settings. Temperature 0 is greedy; `seed` picks the random numbers."""
        sample = self.config["sample"]
        ids = self.encode(prompt)
        if not len(ids):
            raise CharLSTMError("the prompt has no characters left after cleaning: give one the vocabulary has")
        length = sample["length"] if length is None else length
        top_k = sample["top_k"] if top_k is None else top_k
        top_p = sample["top_p"] if top_p is None else top_p
        if temperature < 0 or length < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise CharLSTMError(
                f"temperature={temperature}, length={length}, top_k={top_k}, top_p={top_p}: temperature, length "
                "and top_k must be >= 0 (top_k 0 = all), top_p in (0, 1]"
            )
        logits, state = self.feed(ids)
        rng, out = np.random.default_rng(seed), []
        for _ in range(length):
            out.append(next_id(logits, temperature, top_k, top_p, rng))
            logits, state = self.feed(out[-1:], state)
        text, stop = self.decode(out), sample["stop"]
        end = text.find(stop) if stop else -1
        return text if end < 0 else text[: end + len(stop)]


def read_manifest(arrays: dict[str, np.ndarray], path: Path) -> dict:
    """The manifest of a loaded `.npz`, refused when it is not an export or comes from a newer format."""
    not_export = f"{str(path)!r} is not a charlstm export: make one with scripts/export.py --workdir RUN --output FILE"
    try:
        manifest = json.loads(arrays[MANIFEST].tobytes().decode("utf-8"))
        version = manifest["format_version"] if manifest["format"] == FORMAT else None
    except (KeyError, TypeError, ValueError):
        raise CharLSTMError(not_export) from None
    if not isinstance(version, int) or any(key not in manifest for key in MANIFEST_KEYS):
        raise CharLSTMError(not_export)
    if version > FORMAT_VERSION:
        raise CharLSTMError(
            f"{str(path)!r} has export format version {version}, newer than this charlstm reads "
            f"({FORMAT_VERSION}): update charlstm, or export the run again with this one"
        )
    return manifest


def load(path: str | Path) -> Model:
    """The export at `path`; CharLSTMError when it is missing, not an export, or of a newer format."""
    path = Path(path)
    if not path.is_file():
        raise CharLSTMError(f"export file {str(path)!r} does not exist: make one with scripts/export.py")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # One .npy array.
            raise ValueError("one array, not an archive")
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CharLSTMError(f"{str(path)!r} is not a charlstm export ({e}): make one with scripts/export.py") from None
    manifest = read_manifest(arrays, path)
    return Model(manifest, {k: v for k, v in arrays.items() if k != MANIFEST})

"""Peak memory of training on a big corpus: a generated text of --mb MB, a few steps, one bounded evaluation.

    python scripts/benchmark_memory.py
    python scripts/benchmark_memory.py --mb 1    # The same on 1 MB: what the corpus adds is the difference.
    python scripts/benchmark_memory.py --config configs/text_file.py --steps 2

Writes the corpus to a temporary folder (random letters, spaces and line breaks,
with some upper case and non-ASCII characters for the cleaning to handle), then
does on it what training does, through charlstm.loop.Training: data.load_corpus
(read, cleaned and encoded in pieces), the model and the training ids onto every
device, the first epoch's window starts, --steps steps of Training.train_epoch,
one evaluation of --eval_chars validation characters (eval.max_chars:
evaluation time grows with it, its memory does not),
the epoch's samples with their novelty figures (which search the decoded
training text) and a checkpoint. Prints the seconds of each phase and the process's peak
resident memory (ru_maxrss) after it. The target for 200 MB with
the default config's model: under 2 GiB.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags
from ml_collections import config_flags

from charlstm import cli, data, loop, parallel, stopping
from charlstm.run_folder import RunFolder

# Characters of the generated text, each as often as it appears here; '~' becomes 'é' (two bytes).
ALPHABET = b"eeeeeeettttttaaaaaooooiiiinnnnsssshhhhrrrddlllcuumwfgypbvkjxqz           ,.\nTAI~"
BLOCK_BYTES = 1 << 24  # Generated and written at a time.

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose model and batch to use.")
_MB = flags.DEFINE_integer("mb", 200, "Size of the generated corpus in MB (10^6 bytes).", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 5, "Training steps to run.", lower_bound=1)
_EVAL_CHARS = flags.DEFINE_integer("eval_chars", 4096, "Validation characters to score.", lower_bound=1)


def write_corpus(path: Path, n_bytes: int, seed: int = 0) -> None:
    """A random text of about `n_bytes` bytes (each 'é' adds one)."""
    rng, alphabet, written = np.random.default_rng(seed), np.frombuffer(ALPHABET, np.uint8), 0
    with open(path, "wb") as f:
        while written < n_bytes:
            block = rng.choice(alphabet, min(BLOCK_BYTES, n_bytes - written)).tobytes()
            written += f.write(block.replace(b"~", "é".encode()))


def measure(config, folder: Path, steps: int) -> dict:
    """Seconds and peak RSS after each phase of training `steps` steps on the corpus at config.data.path."""
    results, began = {}, time.perf_counter()

    def phase(name: str) -> None:
        nonlocal began
        results[name] = {"seconds": time.perf_counter() - began, "peak_rss_mib": cli.peak_rss_mib()}
        began = time.perf_counter()

    corpus = data.load_corpus(config.data)
    phase("load_corpus")
    training, state = loop.Training.start(config, corpus, RunFolder.create(folder), stopping.StopRequest())
    starts = loop.window_starts(corpus, config, 1)[:steps]
    phase("model_and_ids")
    state = training.train_epoch(state, starts)
    phase("train_steps")
    metrics = training.epoch_metrics(state, starts)
    phase("evaluate")
    training.novelty_summary(training.epoch_samples(state, 1))
    phase("samples_novelty")
    training.save(state, metrics)
    training.run.checkpoints.wait()
    phase("checkpoint")
    return {"train_chars": len(corpus.train_ids), "val_chars": len(corpus.val_ids), "vocab": corpus.vocab.size,
            "ids_dtype": str(corpus.train_ids.dtype), "phases": results}


def main() -> None:
    config = _CONFIG.value
    config.eval.max_chars = _EVAL_CHARS.value
    with tempfile.TemporaryDirectory() as folder:
        config.data.path = str(Path(folder) / "corpus.txt")
        write_corpus(Path(config.data.path), _MB.value * 10**6)
        results = measure(config, Path(folder) / "run", _STEPS.value)
    print(f"{_MB.value} MB corpus: {results['train_chars']:,} train + {results['val_chars']:,} validation "
          f"characters, vocabulary of {results['vocab']} as {results['ids_dtype']}; {parallel.make_mesh().size} "
          f"device(s), batch {config.train.batch_size}, "
          f"{config.model.num_layers}x{config.model.units} {config.model.cell}")
    for name, phase in results["phases"].items():
        print(f"{name:<16}{phase['seconds']:8.1f} s   peak RSS {phase['peak_rss_mib']:8.0f} MiB")


if __name__ == "__main__":
    cli.run(main, "pass settings as flags, e.g. --mb 200")

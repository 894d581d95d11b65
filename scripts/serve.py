"""A web page to play with a trained run: prompt, sampling settings, text streamed in shaded by surprisal.

    python scripts/serve.py --workdir runs/obama [--port 8000]

Then open http://127.0.0.1:8000/. The page and its JSON API (docs/serve.md) are served on this machine
only, unless --host names another address: there is no authentication. The model is compiled once at
start (the page says 'warming up' until then); the flags cap what one request may ask for.
"""

from absl import flags

from charlstm import cli, trained_run
from charlstm.serve import Limits, serve

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; another than loopback is reachable by "
                            "other machines, with no authentication.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.", lower_bound=0, upper_bound=65535)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best' (lowest val_loss), 'latest' or a step number.")
_DEFAULT = Limits()
_MAX_LENGTH = flags.DEFINE_integer("max_length", _DEFAULT.max_length, "Most characters per sample.", lower_bound=1)
_MAX_SAMPLES = flags.DEFINE_integer("max_samples", _DEFAULT.max_samples, "Most samples per request.", lower_bound=1)
_MAX_PROMPT = flags.DEFINE_integer(
    "max_prompt", _DEFAULT.max_prompt, "Most characters of a prompt or a text to score.", lower_bound=2
)
_MAX_REQUESTS = flags.DEFINE_integer(
    "max_requests", _DEFAULT.max_requests, "Most requests in progress or waiting; more get 429.", lower_bound=1
)
_BATCH_REQUESTS = flags.DEFINE_integer(
    "batch_requests", _DEFAULT.batch_requests,
    "Most waiting requests one sampler call serves together; 1 serves them one at a time.", lower_bound=1,
)
cli.define_config_overrides(
    trained_run.default_config(), "Overrides of the run's config, e.g. --config.sample.oov=skip."
)
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    limits = Limits(_MAX_LENGTH.value, _MAX_SAMPLES.value, _MAX_PROMPT.value, _MAX_REQUESTS.value,
                    _BATCH_REQUESTS.value)
    serve(_WORKDIR.value, _HOST.value, _PORT.value, limits, _CHECKPOINT.value, cli.config_overrides())


if __name__ == "__main__":
    cli.run(main, "pass the run folder as --workdir")

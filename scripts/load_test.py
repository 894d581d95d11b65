"""Throughput of scripts/serve.py: 1 and 8 clients asking for 200 characters each, with and without batching.

    python scripts/load_test.py --workdir runs/obama

Starts the server twice on a free loopback port, in a process of its own, once serving waiting requests
together in one sampler call (--batch_requests 8) and once one at a time (--batch_requests 1), and prints
a Markdown table of requests and characters per second and each request's wait, after a warm-up round.
"""

from absl import flags

from charlstm import cli
from charlstm.serve import load

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder made by scripts/train.py.")
_CLIENTS = flags.DEFINE_list("clients", ["1", "8"], "Numbers of concurrent clients to measure.")
_REQUESTS = flags.DEFINE_integer("requests", 40, "Requests each client sends, one after another.", lower_bound=1)
_LENGTH = flags.DEFINE_integer("length", 200, "Characters each request asks for.", lower_bound=1)
_BATCHING = flags.DEFINE_list("batch_requests", ["8", "1"], "The server's --batch_requests values to compare.")
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    body = {"prompt": "the state of our union is", "length": _LENGTH.value}
    print("| --batch_requests | clients | requests | requests/s | characters/s | median wait (ms) | longest (ms) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for batching in _BATCHING.value:
        with load.served(_WORKDIR.value, "--batch_requests", batching) as url:
            load.measure(url, max(map(int, _CLIENTS.value)), 2, body)  # Warm the connections and the page cache.
            for clients in map(int, _CLIENTS.value):
                r = load.measure(url, clients, _REQUESTS.value, body)
                print(f"| {batching} | {clients} | {r['requests']} | {r['requests_per_second']:.1f} | "
                      f"{r['chars_per_second']:,.0f} | {r['median_ms']:.1f} | {r['worst_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    cli.run(main, "pass the run folder as --workdir")

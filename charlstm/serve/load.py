"""Concurrent clients against a server: each sends generate requests one after another on its own
connection; how many requests and characters per second they got, and how long each waited.
scripts/load_test.py runs it against servers it starts."""

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from charlstm.errors import CharLSTMError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "serve.py"


def generate(connection: http.client.HTTPConnection, body: dict) -> int:
    """One POST /api/generate; the characters it generated."""
    connection.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise CharLSTMError(f"the server answered {response.status}: {answer['error']}")
    return sum(len(sample["text"]) for sample in answer["samples"])


def measure(url: str, clients: int, requests_each: int, body: dict) -> dict:
    """`clients` threads each sending `requests_each` requests of `body` (seeds differ); the totals."""
    address = urllib.parse.urlsplit(url)
    start, latencies, chars = threading.Barrier(clients + 1), [], []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=300)
        start.wait()
        for i in range(requests_each):
            began = time.perf_counter()
            chars.append(generate(connection, {**body, "seed": index * requests_each + i}))
            latencies.append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if len(latencies) != clients * requests_each:
        raise CharLSTMError("a client failed: see its error above")
    return {"clients": clients, "requests": len(latencies), "seconds": seconds,
            "requests_per_second": len(latencies) / seconds, "chars_per_second": sum(chars) / seconds,
            "median_ms": 1000 * statistics.median(latencies), "worst_ms": 1000 * max(latencies)}


def info(url: str) -> dict:
    with urllib.request.urlopen(url + "api/info", timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def served(workdir: str, *flags: str, timeout: float = 600) -> Iterator[str]:
    """scripts/serve.py on a free loopback port in a process of its own while the block runs, once warmed up;
    yields its URL."""
    command = [sys.executable, str(SCRIPT), "--workdir", workdir, "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = next((line for line in process.stdout if " at http" in line), "")
        if not line:
            raise CharLSTMError("scripts/serve.py did not start: see its error above")
        url = line.split(" at ")[1].split()[0]
        deadline = time.monotonic() + timeout
        while not info(url)["ready"]:
            if time.monotonic() > deadline:
                raise CharLSTMError(f"the server at {url} was not warm after {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)

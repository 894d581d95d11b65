"""Starting the web app: the run loaded, the socket bound, the model's thread warming up, uvicorn serving.

serve() is scripts/serve.py's; running() serves in a background thread of this process, for the tests,
the screenshot and the load test, on a free loopback port by default.
"""

import contextlib
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from charlstm import generation, trained_run
from charlstm.errors import CharLSTMError
from charlstm.serve.app import create_app
from charlstm.serve.requests import Limits
from charlstm.serve.worker import Worker


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); a CharLSTMError when that cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:  # socket.gaierror for an unknown host, EADDRINUSE for a port in use.
        reason = os.strerror(e.errno) if not isinstance(e, socket.gaierror) and e.errno else e.strerror or str(e)
        raise CharLSTMError(f"cannot listen on {host}:{port}: {reason}: pass another --port (0 picks a free one) "
                            "or --host") from None


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is on this machine only (127.0.0.0/8, ::1)."""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def start(workdir: str | Path, limits: Limits, checkpoint: str = "best", overrides: dict | None = None,
          log=lambda line: None) -> tuple[uvicorn.Server, Worker]:
    """The run in `workdir` loaded (a CharLSTMError for a folder without a checkpoint), its model's thread
    started on the warm-up, and the server for it, not yet serving."""
    model = generation.Model(trained_run.load(workdir, checkpoint, overrides), prime_in_pieces=True)
    worker = Worker(model, limits, log)
    app = create_app(model, worker, limits)
    worker.start()
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)), worker


def serve(workdir: str | Path, host: str, port: int, limits: Limits, checkpoint: str = "best",
          overrides: dict | None = None) -> None:
    """Serves the run in `workdir` on host:port until Ctrl-C; a one-line CharLSTMError if it cannot start."""
    sock = bind(host, port)
    if not is_loopback(host):
        print(f"warning: serving on {host}, which other machines can reach; there is no authentication: "
              "anyone who reaches it can use this machine's CPU", file=sys.stderr)
    server, worker = start(workdir, limits, checkpoint, overrides, log=print)
    print(f"serving {Path(workdir)} at {url_of(sock)} (warming up; Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has shut down.
        pass
    finally:
        if not worker.ready.is_set():
            print("stopping once the warm-up ends (a compile cannot be cut short)", flush=True)
        worker.stop()
    print("stopped")


@contextlib.contextmanager
def running(workdir: str | Path, limits: Limits, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves the run in `workdir` from a background thread while the block runs; yields the page's URL."""
    sock = bind(host, port)
    server, worker = start(workdir, limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join()
        worker.stop()
        sock.close()

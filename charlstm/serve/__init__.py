"""A web app to play with a trained run (scripts/serve.py, docs/serve.md).

    requests  the API's request bodies: fields, types, limits (Limits), RequestError naming the field
    jobs      what the model's thread runs: requests batched into one sampler call, scoring, the warm-up
    worker    the model's thread: the queue of jobs, batches of waiting requests, compile counts
    app       the Starlette app: the page, /api/info, /api/generate (JSON or server-sent events), /api/score
    server    binding the port, uvicorn, serve() for the script and running() for tests and tools
    browser   the page driven in headless Chromium (Selenium): what its test and the screenshot run
    load      concurrent clients against a server: requests and characters per second
    static/   index.html, the page: plain HTML and JavaScript, no build step, nothing loaded from elsewhere
"""

from charlstm.serve.requests import Limits
from charlstm.serve.server import running, serve

__all__ = ["Limits", "running", "serve"]

"""The HTTP side: the page, GET /api/info, POST /api/generate (one JSON answer, or server-sent events with
?stream=1) and POST /api/score, every error as JSON naming the field at fault. Handlers run on the event
loop; the model runs on the Worker's thread, which sends each request's events back to it."""

import asyncio
import contextlib
import dataclasses
import importlib.resources
import json
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charlstm import evaluate, generation
from charlstm.errors import CharLSTMError
from charlstm.serve import jobs, requests
from charlstm.serve.requests import Limits, RequestError
from charlstm.serve.worker import Worker, compiles

PAGE = (importlib.resources.files("charlstm.serve") / "static" / "index.html").read_text(encoding="utf-8")
FINAL = ("done", "error")  # A request's last event.
SCORED_HOW = "stream: each character after the first given all before it, from a zero state"


class Api:
    """The routes' handlers, sharing the model, its Worker, the limits and the count of requests in progress."""

    def __init__(self, model: generation.Model, worker: Worker, limits: Limits):
        self.model, self.worker, self.limits, self.in_progress = model, worker, limits, 0
        self.defaults = sample_defaults(model, limits)
        metrics = model.run.folder.checkpoints.restore_meta(model.step).metrics
        self.about = {
            "run": model.run.path.name, "workdir": str(model.run.path), "step": model.step,
            "val_bpc": metrics.get("val_bpc"), "val_protocol": metrics.get("val_protocol"),
            "vocab": model.vocab.chars, "defaults": self.defaults, "limits": dataclasses.asdict(limits),
            "shade": {"bits": evaluate.SHADE_BITS, "rgb": evaluate.SHADE_RGB},
        }

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def info(self, request: Request) -> Response:
        """The run, the defaults and limits, and whether the warm-up is over (the page waits for it)."""
        compiled = {"warm_up": self.worker.warm_up_compiles, "since_warm_up": self.worker.compiles_since_warm_up(),
                    "in_process": compiles()}
        return JSONResponse({**self.about, "ready": self.worker.ready.is_set(), "in_progress": self.in_progress,
                             "warm_up_seconds": round(self.worker.warm_up_seconds, 2), "compiles": compiled})

    async def generate(self, request: Request) -> Response:
        """`num_samples` continuations of the prompt with their surprisal and bits per character."""
        stream = stream_flag(request)
        body = requests.parse_generate(await read_body(request, self.limits), self.limits, self.model.vocab.size,
                                       self.defaults)
        ids, warnings = self.encode(body.prompt, "prompt")
        settings = {k: v for k, v in dataclasses.asdict(body).items() if k != "prompt"}
        head = {"run": self.about["run"], "step": self.model.step, "prompt": body.prompt, "warnings": warnings,
                "settings": settings}
        events = self.submit(lambda send: jobs.GenerateJob(body, ids, send))
        if stream:
            return StreamingResponse(server_sent(events, head), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await answer(events, head)

    async def score(self, request: Request) -> Response:
        """The surprisal in bits of each character of the text after its first."""
        body = requests.parse_score(await read_body(request, self.limits), self.limits)
        ids, warnings = self.encode(body.text, "text")
        if len(ids) < 2:
            raise RequestError("text has fewer than 2 characters after cleaning: send a longer one", "text")
        head = {"text": self.model.vocab.decode(ids), "warnings": warnings, "first": 1, "how": SCORED_HOW}
        return await answer(self.submit(lambda send: jobs.ScoreJob(ids, send)), head)

    def encode(self, text: str, field: str):
        """Ids of `text` cleaned as the training text was, and warnings naming what was dropped."""
        try:
            ids, warnings = self.model.run.encode(text, field)
        except CharLSTMError as e:
            raise RequestError(str(e), field) from None
        if not len(ids):
            raise RequestError(f"the {field} has no characters left after cleaning ({'; '.join(warnings)}): "
                               "send another", field)
        return ids, warnings

    def submit(self, make_job: Callable[[jobs.Send], object]) -> AsyncIterator[tuple[str, dict]]:
        """Queues the job `make_job(send)` for the model's thread; its events, up to the last, as they come."""
        if self.in_progress >= self.limits.max_requests:
            raise RequestError(f"the server has {self.in_progress} requests in progress (its --max_requests): "
                               "retry in a moment", None, 429)
        loop, events, finished = asyncio.get_running_loop(), asyncio.Queue(), []

        def deliver(name: str, data: dict) -> None:  # On the event loop.
            if finished:
                return
            events.put_nowait((name, data))
            if name in FINAL:
                finished.append(name)
                self.in_progress -= 1

        def send(name: str, data: dict) -> None:  # On the model's thread.
            with contextlib.suppress(RuntimeError):  # The loop has closed: the server is stopping.
                loop.call_soon_threadsafe(deliver, name, data)

        self.in_progress += 1
        self.worker.submit(make_job(send))
        return until_final(events)


def sample_defaults(model: generation.Model, limits: Limits) -> dict:
    """A generate request's defaults: the run's sample settings (its first temperature), within `limits`."""
    s = model.config.sample
    return {"length": min(s.length, limits.max_length), "temperature": float(s.temperatures[0]),
            "top_k": min(s.top_k, model.vocab.size), "top_p": s.top_p, "seed": 0, "num_samples": 1}


def stream_flag(request: Request) -> bool:
    """?stream=1 asks for server-sent events; 0 or none for one JSON answer."""
    unknown = [name for name in request.query_params if name != "stream"]
    value = request.query_params.get("stream", "0")
    if unknown or value not in ("0", "1"):
        field = unknown[0] if unknown else "stream"
        raise RequestError(f"query parameter {field}={request.query_params[field]!r}: the only one is stream=0 or 1",
                           field)
    return value == "1"


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body; a 413 error past limits.max_body bytes, read no further."""
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > limits.max_body:
            raise RequestError(f"the request body is over {limits.max_body:,} bytes: send at most the server's "
                               f"--max_prompt={limits.max_prompt} characters", "body", 413)
    return body


async def until_final(events: asyncio.Queue) -> AsyncIterator[tuple[str, dict]]:
    while True:
        name, data = await events.get()
        yield name, data
        if name in FINAL:
            return


async def answer(events: AsyncIterator[tuple[str, dict]], head: dict) -> Response:
    """The request's result as one JSON object, `head` first; an error event as a JSON error."""
    async for name, data in events:
        if name == "done":
            return JSONResponse({**head, **data})
        if name == "error":
            return JSONResponse({"error": data["error"], "field": None}, data["status"])
    raise AssertionError("the events ended without a final one")


async def server_sent(events: AsyncIterator[tuple[str, dict]], head: dict) -> AsyncIterator[str]:
    """The events as server-sent events: 'piece' ones, then 'done' with `head` and the result, or 'error'."""
    async for name, data in events:
        yield f"event: {name}\ndata: {json.dumps({**head, **data} if name == 'done' else data)}\n\n"


async def request_error(request: Request, error: RequestError) -> Response:
    return JSONResponse({"error": str(error), "field": error.field}, error.status)


async def http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own errors (an unknown path, a wrong method) as JSON too."""
    return JSONResponse({"error": f"{error.detail}: see GET /api/info and docs/serve.md", "field": None},
                        error.status_code, headers=error.headers)


def create_app(model: generation.Model, worker: Worker, limits: Limits) -> Starlette:
    api = Api(model, worker, limits)
    routes = [
        Route("/", api.page), Route("/api/info", api.info),
        Route("/api/generate", api.generate, methods=["POST"]), Route("/api/score", api.score, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={RequestError: request_error, HTTPException: http_error})

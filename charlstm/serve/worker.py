"""The model's one thread: it compiles at start (the warm-up), then takes jobs from a queue, a batch of
waiting generate requests or one text to score at a time, so that JAX is called from this thread alone
and the event loop never waits on it."""

import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable

import jax

from charlstm import generation
from charlstm.errors import CharLSTMError
from charlstm.serve import jobs
from charlstm.serve.requests import Limits

STOP = object()  # Put on the queue by stop(): the thread ends after the jobs before it.
# jax.monitoring's event for each program XLA compiles (or loads from the persistent cache).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = [0]


def _count_compile(event: str, duration: float, **kwargs) -> None:
    if event == COMPILE_EVENT:
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def compiles() -> int:
    """Programs compiled in this process so far."""
    return _compiles[0]


class Worker:
    """Runs `model` on its own thread: submit() jobs from any thread; `ready` is set after the warm-up."""

    def __init__(self, model: generation.Model, limits: Limits, log: Callable[[str], None] = lambda line: None):
        self.model, self.limits, self.log = model, limits, log
        self.queue, self.ready, self._held = queue.Queue(), threading.Event(), None
        self.warm_up_compiles = self.warm_up_seconds = self._compiles_at_ready = 0
        self._thread = threading.Thread(target=self._serve, name="charlstm-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread once the jobs already queued are done."""
        self.queue.put(STOP)
        self._thread.join()

    def submit(self, job: jobs.GenerateJob | jobs.ScoreJob) -> None:
        self.queue.put(job)

    def compiles_since_warm_up(self) -> int:
        return compiles() - self._compiles_at_ready if self.ready.is_set() else 0

    def _serve(self) -> None:
        started, before = time.perf_counter(), compiles()
        try:
            jobs.warm_up(self.model, self.limits)
        except Exception:  # noqa: BLE001 -- the requests' own errors then say what fails; the page stays up.
            traceback.print_exc(file=sys.stderr)
        self.warm_up_seconds = time.perf_counter() - started
        self._compiles_at_ready = compiles()
        self.warm_up_compiles = self._compiles_at_ready - before
        self.ready.set()
        self.log(f"ready: compiled {self.warm_up_compiles} programs in {self.warm_up_seconds:.1f} s")
        while (batch := self._next_batch()) is not STOP:
            self._run(batch)

    def _next_batch(self):
        """The next job (a ScoreJob, or STOP), or a list of the generate jobs waiting, up to batch_requests."""
        first = self._held if self._held is not None else self.queue.get()
        self._held = None
        if not isinstance(first, jobs.GenerateJob):
            return first
        batch = [first]
        while len(batch) < self.limits.batch_requests:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(job, jobs.GenerateJob):
                self._held = job
                break
            batch.append(job)
        return batch

    def _run(self, batch) -> None:
        """Runs a batch or a score job; a failure is sent to its jobs as an 'error' event, and the thread goes on."""
        try:
            if isinstance(batch, jobs.ScoreJob):
                bits = jobs.score(self.model, batch.ids)
                batch.send("done", {"surprisal": jobs.rounded(bits), "bpc": float(bits.mean(dtype=float))})
            else:
                jobs.run_batch(self.model, batch, self.limits)
        except Exception as e:  # noqa: BLE001 -- a request must not stop the thread that serves the others.
            status = 400 if isinstance(e, CharLSTMError) else 500
            if status == 500:
                traceback.print_exc(file=sys.stderr)
            for job in batch if isinstance(batch, list) else [batch]:
                job.send("error", {"error": " ".join(str(e).split()) or type(e).__name__, "status": status})

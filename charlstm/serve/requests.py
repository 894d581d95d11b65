"""The API's request bodies: their fields, types and limits, checked into plain values.

A body is a JSON object; a field it lacks takes its default, an unknown field,
a value of the wrong type or out of range is refused with a RequestError that
names the field, so a client can point at what to fix.
"""

import dataclasses
import json
import math

from charlstm.errors import CharLSTMError

REQUIRED = object()  # The default of a field a request must give.
SEED_RANGE = 2**31  # Seeds are whole numbers from 0 below this (jax.random.key takes them as int32).


class RequestError(CharLSTMError):
    """A request the server refuses with HTTP `status`; `field` names the part at fault (None: no one field)."""

    def __init__(self, message: str, field: str | None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many the server takes on at once (scripts/serve.py's flags)."""

    max_length: int = 1000  # Characters per sample.
    max_samples: int = 4  # Samples per request.
    max_prompt: int = 1000  # Characters of a prompt or of a text to score.
    max_requests: int = 32  # Requests in progress or waiting; more are refused (429).
    batch_requests: int = 8  # Waiting requests served by one sampler call; 1 = one at a time, in order.

    @property
    def max_body(self) -> int:
        """Bytes a request body may have: the longest prompt in UTF-8 (4 bytes a character at most), escaped,
        with the other fields."""
        return 12 * self.max_prompt + 4096


@dataclasses.dataclass(frozen=True)
class Generate:
    """POST /api/generate: continue `prompt` by `length` characters, `num_samples` times."""

    prompt: str
    length: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    num_samples: int


@dataclasses.dataclass(frozen=True)
class Score:
    """POST /api/score: the surprisal of each character of `text`."""

    text: str


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a body: its JSON type (str: its length is checked), its bounds and its default."""

    kind: type
    low: float
    high: float
    default: object = REQUIRED
    low_open: bool = False  # The value must be above `low`, not at it.
    note: str = ""  # What the bounds mean, e.g. "(the server's --max_length)".

    def check(self, name: str, value) -> object:
        """`value`, a float for a float field; a RequestError naming `name` for the wrong type or out of bounds."""
        if not self.is_kind(value):
            raise RequestError(f"{name} must be {self.allowed()}, not {json.dumps(value)[:40]}", name)
        size = len(value) if self.kind is str else value
        if size < self.low or (self.low_open and size == self.low) or size > self.high:
            shown = f"a text of {len(value)} characters" if self.kind is str else json.dumps(value)
            raise RequestError(f"{name} is {shown}, out of range: give {self.allowed()}", name)
        return float(value) if self.kind is float else value

    def is_kind(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is float:
            return isinstance(value, int | float) and math.isfinite(value)
        return isinstance(value, self.kind)

    def allowed(self) -> str:
        """E.g. 'a whole number from 1 to 1000 (the server's --max_length)'."""
        low = f"above {self.low:g}" if self.low_open else f"from {self.low:g}"
        unit = " characters" if self.kind is str else ""
        return f"{KIND_WORDS[self.kind]} {low} to {self.high:g}{unit}{' ' + self.note if self.note else ''}"


KIND_WORDS = {str: "a string", int: "a whole number", float: "a number"}


def generate_fields(limits: Limits, vocab_size: int, defaults: dict) -> dict[str, Field]:
    """The fields of a generate request; `defaults` (the run's sample settings) for all but the prompt."""
    return {
        "prompt": Field(str, 1, limits.max_prompt, note="(the server's --max_prompt)"),
        "length": Field(int, 1, limits.max_length, defaults["length"], note="(the server's --max_length)"),
        "temperature": Field(float, 0, 100, defaults["temperature"], note="(0 = greedy)"),
        "top_k": Field(int, 0, vocab_size, defaults["top_k"], note="(0 = all; the vocabulary's size)"),
        "top_p": Field(float, 0, 1, defaults["top_p"], low_open=True, note="(1 = all)"),
        "seed": Field(int, 0, SEED_RANGE - 1, 0),
        "num_samples": Field(int, 1, limits.max_samples, 1, note="(the server's --max_samples)"),
    }


def score_fields(limits: Limits) -> dict[str, Field]:
    return {"text": Field(str, 2, limits.max_prompt, note="(the server's --max_prompt)")}


def parse(body: bytes, fields: dict[str, Field]) -> dict:
    """The values of `fields` in a JSON object `body`, defaults filled in; a RequestError for a body that is
    not a JSON object, an unknown or missing field, or a bad value."""
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"the request body is not JSON ({e}): send a JSON object of the fields", "body") from None
    if not isinstance(values, dict):
        raise RequestError(f"the request body is a JSON {type(values).__name__}: send a JSON object", "body")
    if unknown := [name for name in values if name not in fields]:
        raise RequestError(f"unknown field {unknown[0]!r}: the fields are {', '.join(fields)}", unknown[0])
    for name, field in fields.items():
        if values.setdefault(name, field.default) is REQUIRED:
            raise RequestError(f"{name} is missing: send {field.allowed()}", name)
        values[name] = field.check(name, values[name])
    return values


def parse_generate(body: bytes, limits: Limits, vocab_size: int, defaults: dict) -> Generate:
    return Generate(**parse(body, generate_fields(limits, vocab_size, defaults)))


def parse_score(body: bytes, limits: Limits) -> Score:
    return Score(**parse(body, score_fields(limits)))

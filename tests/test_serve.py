"""The web app (charlstm.serve, scripts/serve.py): its JSON API on a loopback port, requests at once, bad
requests and start-ups, and the page in headless Chromium."""

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from charlstm import generation, trained_run
from charlstm.serve import Limits, browser, running
from charlstm.serve.app import Api
from charlstm.serve.requests import RequestError
from charlstm.serve.worker import Worker
from tests.conftest import assert_one_line_error, run_script, snapshot

# Small caps: the warm-up compiles a batch of each row count up to batch_requests x max_samples = 4.
LIMITS = Limits(max_length=100, max_samples=2, max_prompt=40, max_requests=16, batch_requests=2)
PROMPT = "the state of our union is"


@pytest.fixture(scope="module")
def url(trained_run_folder):
    """The session's one-epoch tiny run served from this process, warmed up."""
    with running(trained_run_folder, LIMITS) as url:
        while not get(url, "api/info")["ready"]:
            time.sleep(0.1)
        yield url


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.load(response)


def post(url: str, path: str, body) -> tuple[int, dict | str]:
    """Status and answer of a POST of `body` (bytes as they are, anything else as JSON): a dict, or the raw
    text of a server-sent event stream."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, text if path.endswith("stream=1") else json.loads(text)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def events(stream: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent event stream."""
    pairs = []
    for block in filter(None, stream.split("\n\n")):
        name, data = block.split("\n")
        pairs.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return pairs


def generate(url: str, **fields) -> dict:
    status, answer = post(url, "api/generate", {"prompt": PROMPT, **fields})
    assert status == 200, answer
    return answer


def test_info_describes_the_run_and_its_limits(url, trained_run_folder):
    info = get(url, "api/info")
    assert info["ready"] and info["workdir"] == str(trained_run_folder) and info["run"] == trained_run_folder.name
    assert info["step"] > 0 and info["val_bpc"] > 0 and info["val_protocol"] == "segments"
    assert info["limits"]["max_length"] == 100 and info["defaults"]["length"] == 40  # configs/tiny.py's.
    assert info["compiles"]["warm_up"] > 0


def test_samples_come_with_their_surprisal_and_bits_per_character(url):
    answer = generate(url, length=70, seed=3, num_samples=2, temperature=0.8, top_k=5)
    assert answer["settings"] == {"length": 70, "temperature": 0.8, "top_k": 5, "top_p": 1.0, "seed": 3,
                                  "num_samples": 2}
    first, second = answer["samples"]
    for sample in answer["samples"]:
        assert len(sample["text"]) == len(sample["surprisal"]) == 70
        assert sample["bpc"] == pytest.approx(np.mean(sample["surprisal"]), abs=1e-3)  # Rounded to 3 decimals.
        assert sample["bpc_at_temperature"] > 0
    assert first["text"] != second["text"]
    assert generate(url, length=70, seed=3, num_samples=2, temperature=0.8, top_k=5)["samples"] == answer["samples"]


def test_the_streamed_text_is_the_unstreamed_text(url):
    fields = {"prompt": PROMPT, "length": 100, "seed": 5, "num_samples": 2}
    status, stream = post(url, "api/generate?stream=1", fields)
    assert status == 200
    pairs = events(stream)
    pieces = [data for name, data in pairs if name == "piece"]
    assert len(pieces) == 2  # 64 characters, then 36.
    answer = generate(url, **fields)
    assert pairs[-1] == ("done", answer)
    for r, sample in enumerate(answer["samples"]):
        assert "".join(piece["texts"][r] for piece in pieces) == sample["text"]
        assert sum((piece["surprisal"][r] for piece in pieces), []) == sample["surprisal"]


def test_a_text_is_scored_character_by_character(url, trained_run_folder):
    text = "we the people"  # Shorter than seq_length: Model.score runs the same stream from its first character.
    status, answer = post(url, "api/score", {"text": text})
    assert status == 200 and answer["text"] == text and answer["first"] == 1
    expected = generation.Model(trained_run.load(trained_run_folder)).score(text).surprisal
    np.testing.assert_allclose(answer["surprisal"], expected, atol=1e-3)  # The server rounds to 3 decimals.


def test_eight_requests_at_once_are_all_served_and_compile_nothing(url):
    """Prompts of eight lengths, streamed and not, one or two samples: no new prompt length or row count
    compiles anything after the warm-up."""
    answers, compiled = [None] * 8, get(url, "api/info")["compiles"]["in_process"]  # This process's, tests' too.

    def client(i: int) -> None:
        path = "api/generate?stream=1" if i % 2 else "api/generate"
        answers[i] = post(url, path, {"prompt": PROMPT[: 3 + 3 * i], "length": 30 + 9 * i, "seed": i,
                                      "num_samples": 1 + i % 2, "top_p": 0.9 if i % 3 else 1.0})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, (status, answer) in enumerate(answers):
        assert status == 200
        samples = (events(answer)[-1][1] if i % 2 else answer)["samples"]
        assert [len(s["text"]) for s in samples] == [30 + 9 * i] * (1 + i % 2)
    info = get(url, "api/info")
    assert info["compiles"]["in_process"] == compiled and info["in_progress"] == 0


BAD_REQUESTS = [  # path, body, status, the field named
    ("api/generate", b"{not json", 400, "body"),
    ("api/generate", b"[1, 2]", 400, "body"),
    ("api/generate", {"prompt": "a", "colour": "red"}, 400, "colour"),
    ("api/generate", {"length": 10}, 400, "prompt"),
    ("api/generate", {"prompt": "a", "length": 101}, 400, "length"),
    ("api/generate", {"prompt": "a", "num_samples": 3}, 400, "num_samples"),
    ("api/generate", {"prompt": "a" * 41}, 400, "prompt"),
    ("api/generate", {"prompt": "a", "top_p": 0}, 400, "top_p"),
    ("api/generate", {"prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ("api/generate", {"prompt": "a", "seed": True}, 400, "seed"),
    ("api/generate", {"prompt": "a", "length": 2.5}, 400, "length"),
    ("api/generate", {"prompt": "\u00e9\u20ac"}, 400, "prompt"),  # Nothing left after cleaning.
    ("api/generate", b'{"prompt": "' + b"a" * 9000 + b'"}', 413, "body"),
    ("api/generate?stream=2", {"prompt": "a"}, 400, "stream"),
    ("api/generate?colour=red", {"prompt": "a"}, 400, "colour"),
    ("api/score", {"text": "a"}, 400, "text"),
    ("api/score", {"prompt": "ab"}, 400, "prompt"),
    ("api/nothing", {}, 404, None),
]


@pytest.mark.parametrize("path, body, status, field", BAD_REQUESTS)
def test_a_bad_request_gets_a_json_error_naming_its_field(url, path, body, status, field):
    got, answer = post(url, path, body)
    assert (got, answer["field"]) == (status, field)
    assert field is None or field in answer["error"]
    assert "\n" not in answer["error"]


def test_requests_leave_the_run_folder_as_it_was(url, trained_run_folder):
    before = snapshot(trained_run_folder)
    generate(url, length=20)
    post(url, "api/score", {"text": PROMPT})
    with urllib.request.urlopen(url, timeout=60) as page:
        assert b"<title>charlstm</title>" in page.read()
    assert snapshot(trained_run_folder) == before


def test_requests_past_max_requests_are_refused(trained_run_folder):
    """Requests still waiting count: with a worker that never runs, the third of max_requests=2 gets 429."""
    model = generation.Model(trained_run.load(trained_run_folder), prime_in_pieces=True)
    limits = Limits(max_requests=2)
    api = Api(model, Worker(model, limits), limits)  # Not started: its jobs stay queued.

    async def three():
        api.submit(lambda send: None)
        api.submit(lambda send: None)
        with pytest.raises(RequestError, match="2 requests in progress") as refused:
            api.submit(lambda send: None)
        return refused.value.status

    assert asyncio.run(three()) == 429


@pytest.mark.slow
def test_start_up_problems_are_one_line_errors(trained_run_folder, tmp_path):
    before = snapshot(trained_run_folder)
    assert_one_line_error(run_script("serve.py", "--workdir", str(tmp_path)), "no checkpoints", "train a run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_script("serve.py", "--workdir", str(trained_run_folder), "--port", port)
    assert_one_line_error(result, port, "--port")
    assert_one_line_error(run_script("serve.py", "--workdir", str(trained_run_folder), "--host"), "--host")
    assert snapshot(trained_run_folder) == before


@pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
def test_the_page_streams_what_the_api_gives(url):
    """Types a prompt in headless Chromium, clicks Generate and reads the page: the API's text for that seed."""
    settings = {"temperature": 0.6, "length": 90, "top_k": 0, "top_p": 1, "seed": 4, "num_samples": 2}
    with browser.chromium() as driver:
        shown = browser.generate_on_page(driver, url, PROMPT, settings)
    assert shown == [s["text"] for s in generate(url, **settings)["samples"]]

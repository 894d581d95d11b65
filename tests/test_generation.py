"""charlstm.load and what it gives: batched and streamed samples, their likelihoods, scores, the
temperature report; and scripts/generate.py around them."""

import io
import json
import math
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

import charlstm
from charlstm import evaluate, generation, temperature_report
from charlstm.errors import CharLSTMError
from charlstm.protocols.stream import stream_nll
from tests.conftest import REPO, assert_one_line_error, float32_tolerance, in_float64, run_script, snapshot

PROMPT = "the state of our union is"


@pytest.fixture(scope="module")
def model(trained_run_folder) -> generation.Model:
    return charlstm.load(trained_run_folder)


@pytest.mark.parametrize("length, temperature, settings", [
    (1, 1.0, {}), (64, 0.0, {}), (150, 0.8, {"top_k": 3}), (200, 1.0, {"top_p": 0.9, "stop": "e"}),
])
def test_a_streamed_sample_is_the_batched_one(model, length, temperature, settings):
    alone = model.generate(PROMPT, length, temperature, seed=4, **settings)[0]
    assert model.stream_sample(lambda piece: None, PROMPT, length=length, temperature=temperature, seed=4,
                               **settings) == alone
    # Among other rows: the same text; float32 rounding of the batched cell may move the bits' last digits.
    batched = model.generate(PROMPT, length, temperature, seed=4, num_samples=3, **settings)[2]
    pieces = list(model.stream(PROMPT, length=length, temperature=temperature, seed=4, sample=2, **settings))
    assert "".join(pieces) == batched.text and all(0 < len(p) <= 64 for p in pieces)
    assert math.isclose(model.generate(PROMPT, length, temperature, seed=4, num_samples=3, **settings)[2].bpc,
                        batched.bpc, rel_tol=1e-6)
    if "stop" in settings:
        assert batched.text.endswith("e") and batched.text.count("e") == 1


def sequence_logits(graphdef, params, ids):
    """The model's logits `[len(ids), vocab]` after each id, from a zero state."""
    return nnx.merge(graphdef, params)(ids[None])[0][0]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_a_samples_bits_are_the_log_softmax_at_its_characters(model, temperature):
    sample = model.generate(PROMPT, 80, temperature, seed=1)[0]
    ids = np.concatenate([model.prompt_ids(PROMPT), model.vocab.encode(sample.text)])
    first = len(ids) - len(sample.text)
    # Under the model: evaluate's own scoring of the same characters.
    scored = stream_nll(model.run.graphdef, model.run.params, ids, first)
    assert math.isclose(sample.bpc, evaluate.bits_per_char(evaluate.average(scored)), rel_tol=1e-6)

    def bits_at(logits, t):
        log_probs = jax.nn.log_softmax(logits[first - 1 : -1] / t, axis=-1)
        return -np.take_along_axis(np.asarray(log_probs), ids[first:, None], -1).mean() / math.log(2)

    logits32 = sequence_logits(model.run.graphdef, model.run.params, ids)
    exact = bits_at(in_float64(sequence_logits, model.run.graphdef, model.run.params, ids), temperature)
    tolerance = float32_tolerance(bits_at(logits32, temperature), exact)
    assert abs(sample.bpc_at_temperature - exact) <= tolerance
    if temperature == 1.0:
        assert math.isclose(sample.bpc_at_temperature, sample.bpc, rel_tol=1e-6)


def test_greedy_samples_are_certain_under_their_own_distribution(model):
    (sample,) = model.generate(PROMPT, 30, 0.0)
    assert sample.bpc_at_temperature == 0.0 and sample.bpc > 0


def test_score_says_how_it_scored_a_short_and_a_long_text(model):
    seq_length = model.config.data.seq_length
    short = model.score("we the people")
    assert short.first == 1 and "stream from the first character" in short.how
    ids = model.vocab.encode("we the people")
    np.testing.assert_array_equal(short.surprisal, stream_nll(model.run.graphdef, model.run.params, ids, 1)
                                  / math.log(2))
    long_text = "we the people of the united states, " * 3
    long = model.score(long_text)
    assert long.first == seq_length and len(long.surprisal) == len(long_text) - seq_length
    assert model.config.eval.protocol in long.how
    assert long.bpc == float(np.mean(long.surprisal, dtype=np.float64))
    with pytest.raises(CharLSTMError, match="fewer than 2 characters"):
        model.score("w")


def test_bad_settings_are_refused(model):
    for settings, words in [({"temperature": -1.0}, "temperatures"), ({"top_k": -1}, "top_k >= 0"),
                            ({"top_p": 0.0}, "0 < top_p"), ({"length": 0}, "length >= 1")]:
        with pytest.raises(CharLSTMError, match=words):
            model.generate(PROMPT, **settings)


@pytest.mark.slow
def test_the_temperature_reports_model_bpc_falls_with_the_temperature(model, tmp_path):
    rows = temperature_report.sweep(model, PROMPT, (1.5, 0.3, 1.0, 0.6), 8, 0, 60, tmp_path / "report")
    assert [row["temperature"] for row in rows] == [0.3, 0.6, 1.0, 1.5]
    bpc = [row["model_bpc"] for row in rows]
    assert bpc == sorted(bpc), bpc
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"report.md", "report.csv", "report.png"}


def generate(run_dir, *args, **kwargs) -> subprocess.CompletedProcess:
    return run_script("generate.py", "--workdir", str(run_dir), *args, **kwargs)


@pytest.mark.slow
def test_a_prompt_from_stdin_ranked_samples_as_json_lines_and_the_best_beams(model, trained_run_folder):
    result = run_script("generate.py", "--workdir", str(trained_run_folder), "--prompt", "-", "--temperature",
                        "0.5,1.0", "--num_samples", "2", "--length", "30", "--seed", "3", "--rank", "--format",
                        "jsonl", stdin=PROMPT.upper() + "\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = model.generate(PROMPT + "\n", 30, (0.5, 1.0), seed=3, num_samples=2)
    assert records == sorted((s.record() for s in expected), key=lambda r: r["bpc"])
    result = generate(trained_run_folder, "--prompt", PROMPT, "--beam", "4", "--num_samples", "2", "--length", "20",
                      "--format", "raw")
    assert result.stdout.splitlines() == [s.text for s in model.beam(PROMPT, 4, 20)[:2]], result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--beam", "3", "--temperature", "0.5"], ["--beam", "--temperature"]),
    (["--sweep_temperatures", "0.5,-1", "--report", "x"], ["--sweep_temperatures", ">= 0"]),
    (["--prompt", "@pyproject.toml"], ["--prompt_file=pyproject.toml"]),
])
def test_contradicting_or_bad_generation_flags_are_one_line_errors(trained_run_folder, args, words):
    before = snapshot(trained_run_folder)
    assert_one_line_error(generate(trained_run_folder, *args, cwd=REPO), *words)
    assert snapshot(trained_run_folder) == before


@pytest.mark.parametrize("values, words", [(["0.5", "-1"], ">= 0"), (["hot"], "give numbers"), (["nan"], ">= 0"),
                                           (["inf"], ">= 0")])
def test_bad_temperatures_are_refused(values, words):
    with pytest.raises(CharLSTMError, match=words):
        generation.parse_temperatures(values, "temperature")
    assert generation.parse_temperatures(["0", "0.5", "1.2"], "temperature") == (0.0, 0.5, 1.2)


def test_a_prompt_file_is_refused_when_missing_binary_or_empty(tmp_path, monkeypatch):
    (tmp_path / "binary").write_bytes(b"\x00\x01\xffrest")
    (tmp_path / "empty").write_text(" \n")
    for source, words in [(tmp_path / "missing", "No such file"), (tmp_path / "binary", "not UTF-8 text"),
                          (tmp_path / "empty", "is empty"), ("-", "stdin is empty")]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
        with pytest.raises(CharLSTMError, match=words):
            generation.read_prompt(str(source))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("we the people\n".encode())))
    assert generation.read_prompt("-") == "we the people\n"


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_streamed_and_exits_130(model, trained_run_folder, tmp_path):
    out = tmp_path / "long.txt"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "generate.py"), "--workdir", str(trained_run_folder), "--prompt",
         PROMPT, "--temperature", "0", "--length", "100000000", "--output", str(out), "--format", "raw"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size < 1000) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert "interrupted" in process.stderr.read()
    written = out.read_text().removesuffix("\n")
    assert len(written) >= 1000 and written == model.generate(PROMPT, len(written), 0.0)[0].text


def test_the_python_session_of_docs_generating_runs(trained_run_folder, capsys):
    page = (REPO / "docs" / "generating.md").read_text()
    code = page.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(code.replace('"runs/obama"', repr(str(trained_run_folder))), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0].isdigit() and len(printed) >= 10

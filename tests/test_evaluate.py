import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from charlstm import CharLSTMError, evaluate, protocols, trained_run
from charlstm.model import CharLSTM, split_model
from charlstm.protocols.stream import stream_nll
from tests.conftest import assert_float32_accurate, assert_one_line_error, in_float64, run_script


def window_scoring(seq_length: int, batch_size: int) -> evaluate.Scoring:
    return evaluate.Scoring("window", seq_length, segment_length=1, burn_in=1, batch_size=batch_size)


def random_model_and_ids(n: int, vocab_size: int = 7, seed: int = 3):
    model = CharLSTM(vocab_size, 10, 2, rngs=nnx.Rngs(seed))
    ids = np.asarray(jax.random.randint(jax.random.key(seed), (n,), 0, vocab_size), np.int32)
    return model, ids


@functools.cache
def one_step(graphdef):
    """The model advanced by one character `[1, 1]` from a state (None: zeros), compiled once per dtype."""
    return jax.jit(lambda params, ids, state: nnx.merge(graphdef, params)(ids, state))


def nll_after(params, graphdef, contexts: list[np.ndarray], targets: list[int]) -> jax.Array:
    """NLL `[n]` of each target after its context from a fresh state, the model stepped through the
    context one character at a time: the direct computation the protocols are checked against (in
    float32, and in float64 by in_float64)."""
    step, nll = one_step(graphdef), []
    for context, target in zip(contexts, targets):
        state = None
        for i in context:
            logits, state = step(params, jnp.asarray([[i]]), state)
        nll.append(-jax.nn.log_softmax(logits[0, -1])[target])
    return jnp.stack(nll)


def direct_reference(graphdef, params, contexts, targets) -> tuple[jax.Array, np.ndarray]:
    """nll_after in float32 and in float64."""
    return nll_after(params, graphdef, contexts, targets), in_float64(nll_after, params, graphdef, contexts, targets)


def test_window_protocol_matches_a_direct_computation():
    seq_length = 5
    model, ids = random_model_and_ids(23)
    graphdef, params = split_model(model)
    contexts = [ids[i - seq_length : i] for i in range(seq_length, len(ids))]
    expected32, expected64 = direct_reference(graphdef, params, contexts, list(ids[seq_length:]))
    per_char = evaluate.per_char_nll(graphdef, params, ids, window_scoring(seq_length, 4))  # 18 = 4*4 + 2.
    assert_float32_accurate(per_char, expected32, expected64, "window NLL")
    mean = evaluate.mean_nll(graphdef, params, ids, window_scoring(seq_length, 7))
    assert_float32_accurate(np.float64(mean), np.mean(expected32), np.mean(expected64), "mean window NLL")
    assert math.isclose(evaluate.bits_per_char(mean), mean / math.log(2))


def stepped_nll(params, graphdef, ids: np.ndarray) -> jax.Array:
    """NLL `[len(ids) - 1]` of ids[1:], the model stepped one character at a time with its state carried."""
    step, state, nll = one_step(graphdef), None, []
    for t in range(len(ids) - 1):
        logits, state = step(params, jnp.asarray(ids[None, t : t + 1]), state)
        nll.append(-jax.nn.log_softmax(logits[0, 0])[ids[t + 1]])
    return jnp.stack(nll)


def test_stream_protocol_equals_one_pass_a_character_at_a_time():
    first = 3
    model, ids = random_model_and_ids(40)
    graphdef, params = split_model(model)
    expected32 = stepped_nll(params, graphdef, ids)[first - 1 :]
    expected64 = in_float64(stepped_nll, params, graphdef, ids)[first - 1 :]
    stream = evaluate.Scoring("stream", first, 1, 1, 1)
    assert_float32_accurate(evaluate.per_char_nll(graphdef, params, ids, stream), expected32, expected64, "stream")
    chunked = stream_nll(graphdef, params, ids, first, chunk=8)  # 39 steps: four chunks carry the state, one padded.
    assert_float32_accurate(chunked, expected32, expected64, "stream in chunks")


@pytest.mark.parametrize("segment_length, burn_in", [(7, 4), (10, 12), (50, 1)])
def test_segments_protocol_scores_each_segment_after_its_burn_in(segment_length, burn_in):
    """Segment k covers [s_k, s_k + segment_length) from s_k = first + k * segment_length, its
    state warmed up on ids[max(s_k - burn_in, 0) : s_k] from zeros."""
    first = 5
    model, ids = random_model_and_ids(48)
    graphdef, params = split_model(model)
    contexts = []
    for t in range(first, len(ids)):
        start = first + (t - first) // segment_length * segment_length
        contexts.append(ids[max(start - burn_in, 0) : t])
    expected32, expected64 = direct_reference(graphdef, params, contexts, list(ids[first:]))
    scoring = evaluate.Scoring("segments", first, segment_length, burn_in, batch_size=2)
    assert_float32_accurate(evaluate.per_char_nll(graphdef, params, ids, scoring), expected32, expected64, "segments")


def test_segments_with_a_burn_in_over_all_earlier_text_is_the_stream():
    first = 4
    model, ids = random_model_and_ids(60)
    graphdef, params = split_model(model)
    stream = evaluate.per_char_nll(graphdef, params, ids, evaluate.Scoring("stream", first, 1, 1, 1))
    segments = evaluate.per_char_nll(graphdef, params, ids, evaluate.Scoring("segments", first, 9, len(ids), 3))
    np.testing.assert_array_equal(segments, stream)
    # Segments at 4 and 13 with a burn-in of 13: the first joins the stream from ids[0], the second runs
    # batched from ids[13 - 13]; both see all earlier text. (The one at 22 reads from ids[9] only.)
    batched = evaluate.per_char_nll(graphdef, params, ids, evaluate.Scoring("segments", first, 9, 13, 3))
    stream64 = in_float64(stepped_nll, params, graphdef, ids)[first - 1 :]
    assert_float32_accurate(batched[: 22 - first], stream[: 22 - first], stream64[: 22 - first], "batched segments")


@pytest.mark.parametrize("protocol", protocols.NAMES)
def test_every_protocol_scores_the_same_characters(protocol):
    """Value i is the NLL of ids[first + i]: changing the character at p changes value p - first and
    nothing before it, under every registered protocol (its settings at their config defaults)."""
    first = 6
    model, ids = random_model_and_ids(70)
    graphdef, params = split_model(model)
    config = trained_run.default_config()
    config.data.seq_length, config.eval.segment_length, config.eval.burn_in, config.eval.batch_size = first, 9, 4, 3
    scoring = evaluate.Scoring.from_config(config, protocol, train_ids=ids)
    before = evaluate.per_char_nll(graphdef, params, ids, scoring)
    assert before.shape == (len(ids) - first,) and np.all(np.isfinite(before)) and np.all(before > 0)
    for p in (first, 30, len(ids) - 1):
        changed = ids.copy()
        changed[p] = (changed[p] + 1) % 7
        after = evaluate.per_char_nll(graphdef, params, changed, scoring)
        np.testing.assert_array_equal(after[: p - first], before[: p - first])
        assert after[p - first] != before[p - first]


@pytest.mark.slow
def test_an_unknown_protocol_is_one_line_naming_the_registered_ones(tmp_path):
    result = run_script("train.py", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
                        "--config.eval.final_protocols=('window','exact')")
    assert_one_line_error(result, "eval.final_protocols", *map(repr, protocols.NAMES))
    scoring = evaluate.Scoring("exact", 1, 1, 1, 1)
    with pytest.raises(CharLSTMError, match="'exact' is unknown: use one of 'window', 'segments'"):
        evaluate.per_char_nll(*split_model(random_model_and_ids(9)[0]), np.arange(9), scoring)


def test_surprisal_tsv_has_one_escaped_row_per_scored_character():
    nll = np.asarray([math.log(2), 2 * math.log(2), 0.0])
    tsv = evaluate.surprisal_tsv("ab\n\t\\", nll)
    assert tsv.splitlines() == [
        "position\tchar\tsurprisal_bits", "2\t\\n\t1.0000", "3\t\\t\t2.0000", "4\t\\\\\t0.0000"
    ]


def test_surprisal_html_escapes_and_shades_each_scored_character():
    page = evaluate.surprisal_html("<a>&\n", np.asarray([0.0, math.log(2) * evaluate.SHADE_BITS, 1.0]), "t<")
    assert '<span class="context">&lt;a</span>' in page and "<title>t&lt;</title>" in page
    assert 'rgba(220,0,0,0.00)" title="0.00 bits">&gt;<' in page
    assert 'rgba(220,0,0,1.00)" title="8.00 bits">&amp;<' in page
    assert "\u21b5\n</span>" in page


def test_max_chars_scores_only_the_first_characters():
    ids, seq_length = np.arange(50), 5
    assert len(evaluate.limit(ids, seq_length, 0)) == 50
    limited = evaluate.limit(ids, seq_length, 12)
    np.testing.assert_array_equal(limited, ids[:17])  # Context, then the 12 characters scored.


def window_nll_directly(run: trained_run.Run, ids: np.ndarray) -> np.ndarray:
    """The run's NLL of each of ids[seq_length:], from exactly the seq_length ids before it, in one model call."""
    seq_length = run.config.data.seq_length
    windows = np.lib.stride_tricks.sliding_window_view(ids, seq_length + 1)
    logits, _ = nnx.merge(run.graphdef, run.params)(windows[:, :-1])
    return np.asarray(-jax.nn.log_softmax(logits[:, -1])[np.arange(len(windows)), windows[:, -1]])


@pytest.mark.slow
def test_evaluate_script_scores_the_head_of_the_runs_validation_text(trained_run_folder):
    """Without --text, scripts/evaluate.py scores the run's own validation text at its best checkpoint, only its
    first eval.max_chars characters after the seq_length of context, with the exact window protocol."""
    result = run_script("evaluate.py", "--workdir", str(trained_run_folder), "--json", "--config.eval.max_chars=300")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    run = trained_run.load(trained_run_folder)
    head = run.corpus().val_ids[: run.config.data.seq_length + 300]
    expected = float(np.mean(window_nll_directly(run, head)))
    assert report["chars"] == 300 and report["protocol"] == "window" and report["checkpoint_step"] == run.step
    assert math.isclose(report["val_loss"], expected, rel_tol=1e-5)  # float32 model, summed in another order.
    assert math.isclose(report["val_bpc"], expected / math.log(2), rel_tol=1e-5)


@pytest.mark.slow
def test_evaluate_script_reproduces_the_final_score_training_wrote(trained_run_folder):
    """With the run's own settings it scores all of the validation text, as training's final evaluation did."""
    result = run_script("evaluate.py", "--workdir", str(trained_run_folder), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    final = json.loads((trained_run_folder / "final_metrics.json").read_text())
    assert report["checkpoint_step"] == final["step"] and report["chars"] == final["val"]["window"]["chars"]
    assert math.isclose(report["val_loss"], final["val"]["window"]["loss"], rel_tol=1e-6)

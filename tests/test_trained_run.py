"""A trained run in use: loading it from its folder, scripts/generate.py and scripts/evaluate.py."""

import dataclasses
import json
import math
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from charlstm import CharLSTMError, evaluate, mixture, trained_run
from charlstm import config as config_lib
from charlstm.checkpoints import Checkpoints
from charlstm.ngram import KneserNey
from charlstm.run_folder import RunFolder
from charlstm.train import train_and_evaluate
from tests.conftest import run_script


@pytest.fixture(scope="module")
def run_dir(trained_run_folder):
    """The session's one-epoch tiny run (sample.length 40, seq_length 20); tests here only read it."""
    return trained_run_folder


@pytest.fixture(scope="module")
def run(run_dir) -> trained_run.Run:
    return trained_run.load(run_dir)


def with_sample(run: trained_run.Run, **fields) -> trained_run.Run:
    """`run` with other sample settings, leaving the shared fixture as it is."""
    config = run.config.copy_and_resolve_references()
    config.sample.update(fields)
    return dataclasses.replace(run, config=config)


def test_the_run_config_is_the_base_and_overrides_sit_on_top(run_dir):
    loaded = trained_run.load(run_dir, overrides={"sample.top_k": 3})
    assert loaded.config.sample.length == 40  # configs/tiny.py's value, not the default 100.
    assert loaded.config.sample.top_k == 3
    assert loaded.step == Checkpoints(run_dir, read_only=True).best_step()


@pytest.mark.parametrize("field, value", [
    ("sample.temperatures", (-0.5,)), ("sample.top_p", 0.0), ("sample.top_p", 1.5), ("sample.length", 0)
])
def test_invalid_sampling_overrides_are_refused(run_dir, field, value):
    with pytest.raises(CharLSTMError, match=field):
        trained_run.load(run_dir, overrides={field: value})


def test_checkpoints_by_name_and_step(run_dir):
    latest = Checkpoints(run_dir, read_only=True).latest_step()
    assert trained_run.load(run_dir, "latest").step == trained_run.load(run_dir, str(latest)).step == latest
    for which in ("7", "soon"):
        with pytest.raises(CharLSTMError, match=f"no checkpoint '{which}'.*one of the steps \\[{latest}\\]"):
            trained_run.load(run_dir, which)


def test_a_file_given_as_a_run_folder_is_called_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(CharLSTMError, match="'.*notes.txt' is a file, not a run folder"):
        trained_run.load(tmp_path / "notes.txt")
    with pytest.raises(CharLSTMError, match="inside '.*notes.txt', which is a file"):
        trained_run.load(tmp_path / "notes.txt" / "run")


def test_folders_without_a_checkpoint_are_refused(tmp_path):
    with pytest.raises(CharLSTMError, match="does not exist"):
        trained_run.load(tmp_path / "nothing")
    with pytest.raises(CharLSTMError, match="no checkpoints/"):
        trained_run.load(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CharLSTMError, match="no checkpoint yet"):
        trained_run.load(tmp_path)


def test_a_checkpoint_rotated_out_between_listing_and_reading_is_resolved_again(tiny_config, tmp_path):
    """A reader of a folder that training writes: the trainer deletes the step the reader listed before the
    reader reads it; 'latest' and 'best' then name the newest (best) step still there, a number is gone."""
    tiny_config.train.epochs = 2
    train_and_evaluate(tiny_config, tmp_path)
    first, latest = Checkpoints(tmp_path, read_only=True).complete_steps()
    readers = {which: RunFolder.open(tmp_path) for which in ("latest", "best", str(latest))}
    for which, folder in readers.items():  # Each reader lists the steps...
        assert trained_run.checkpoint_step(folder.checkpoints, which) == latest
    shutil.rmtree(tmp_path / "checkpoints" / str(latest))  # ...then the trainer rotates the latest out.
    assert trained_run.read(readers["latest"], "latest").step == first
    assert trained_run.read(readers["best"], "best").step == first
    with pytest.raises(CharLSTMError, match=f"there is no checkpoint '{latest}'.*steps \\[{first}\\]"):
        trained_run.read(readers[str(latest)], str(latest))


def test_a_run_saved_before_newer_fields_existed_gets_their_defaults(run_dir, tmp_path):
    old = shutil.copytree(run_dir, tmp_path / "old")
    saved = json.loads((old / "config.json").read_text())
    for field in ("cell", "embed_dim", "dropout", "weight_dropout"):
        del saved["model"][field]
    (old / "config.json").write_text(json.dumps(saved))
    assert trained_run.load(old).config.model.cell == "lstm"


def test_prompts_are_cleaned_as_the_training_text(run):
    ids, warnings = run.encode("The Union, 100%", "prompt")
    assert run.vocab.decode(ids) == "the union, 100"
    assert len(warnings) == 1 and "'%'" in warnings[0]


def test_characters_outside_the_vocabulary_are_an_error_or_skipped(run):
    assert "!" not in run.vocab.chars  # The tiny corpus has no '!', though cleaning keeps it.
    with pytest.raises(CharLSTMError, match="characters '!' that are not in the run's vocabulary.*oov=skip"):
        run.encode("strong!", "prompt")
    ids, warnings = with_sample(run, oov="skip").encode("strong!", "prompt")
    assert run.vocab.decode(ids) == "strong" and "'!'" in warnings[0]
    with pytest.raises(CharLSTMError, match="sample.oov='maybe'"):
        config_lib.validate(with_sample(run, oov="maybe").config)


def test_evaluate_matches_a_direct_computation(run, run_dir):
    val_ids, seq_length = run.corpus().val_ids, run.config.data.seq_length
    windows = np.lib.stride_tricks.sliding_window_view(val_ids, seq_length + 1)
    logits, _ = nnx.merge(run.graphdef, run.params)(windows[:, :-1])
    direct = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits[:, -1])), windows[:, -1:], -1).mean()
    val_loss = evaluate.mean_nll(run.graphdef, run.params, val_ids, evaluate.Scoring("window", seq_length, 1, 1, 300))
    assert math.isclose(val_loss, direct, rel_tol=1e-5)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["step"] == run.step and math.isclose(val_loss, final["val"]["window"]["loss"], rel_tol=1e-5)


def test_a_changed_corpus_is_refused(run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("another text altogether. " * 100)
    config = run.config.copy_and_resolve_references()
    config.data.path = str(other)
    with pytest.raises(CharLSTMError, match="changed since"):
        dataclasses.replace(run, config=config).corpus()


def generate(run_dir, *args):
    return run_script("generate.py", "--workdir", str(run_dir), *args)


def samples(stdout: str) -> list[str]:
    """The texts of generate.py's output, in order."""
    blocks = stdout.split("\n--- temperature ")[1:]
    return [block.split(":\n", 1)[1].split("\n--- ")[0].removesuffix("\n") for block in blocks]


@pytest.mark.slow
def test_generate_continues_a_prompt_at_each_temperature(run_dir):
    # The prompt is longer than the run's seq_length (20): priming carries the state through all of it.
    result = generate(
        run_dir, "--prompt", "The state of our union is", "--length", "30",
        "--config.sample.temperatures=(0.0,1.0)", "--num_samples", "2", "--seed", "3", "--novelty",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--- prompt: 'the state of our union is'\n")
    texts = samples(result.stdout)
    assert [len(t) for t in texts] == [30] * 4
    assert texts[0] == texts[1] and texts[2] != texts[3]  # Temperature 0 is greedy.
    assert result.stdout.count("--- novelty: longest substring found in the training text: ") == 4


@pytest.mark.slow
def test_generate_without_a_prompt_starts_from_the_validation_text(run, run_dir, tmp_path):
    result = generate(run_dir, "--seed", "1", "--output", str(tmp_path / "out" / "samples.txt"))
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "out" / "samples.txt").read_text()
    prompt = written.split("--- prompt: ")[1].split("\n")[0]
    assert len(eval(prompt)) == 20 and eval(prompt) in run.vocab.decode(run.corpus().val_ids)
    assert [len(t) for t in samples(written)] == [40, 40]  # The run's sample.length and two temperatures.


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--workdir", "/no/such/run"], ["run folder '/no/such/run' does not exist"]),
    (["--prompt", "strong!"], ["'!'", "--config.sample.oov=skip"]),
    (["--length", "50", "--max_length", "49"], ["50 characters", "--max_length=49", "--stream"]),
])
def test_generate_bad_input_is_one_line_and_exit_code_2(run_dir, args, words):
    result = generate(run_dir, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.slow
def test_generate_skips_unknown_characters_and_stops_at_the_stop_string(run_dir):
    result = generate(run_dir, "--prompt", "strong!", "--config.sample.oov=skip", "--config.sample.stop= ")
    assert result.returncode == 0, result.stderr
    assert "'!'" in result.stderr and result.stdout.startswith("--- prompt: 'strong'")
    assert all(" " not in t[:-1] for t in samples(result.stdout))


@pytest.mark.slow
def test_evaluate_scores_a_text_file_and_writes_surprisal(run, run_dir, tmp_path):
    text = tmp_path / "speech.txt"
    text.write_text("The State of our Union is strong; 100% strong. " * 3)
    result = run_script(
        "evaluate.py", "--workdir", str(run_dir), "--text", str(text),
        "--tsv", str(tmp_path / "s.tsv"), "--html", str(tmp_path / "s.html"),
    )
    assert result.returncode == 0, result.stderr
    assert "warning: dropped '%'" in result.stderr
    ids, _ = run.encode(text.read_text(), "text")
    expected = evaluate.mean_nll(
        run.graphdef, run.params, ids, evaluate.Scoring("window", run.config.data.seq_length, 1, 1, 64)
    )
    assert f"text_loss {expected:.4f}  text_bpc {evaluate.bits_per_char(expected):.4f}  (window;" in result.stdout
    rows = (tmp_path / "s.tsv").read_text().splitlines()[1:]
    assert len(rows) == len(ids) - run.config.data.seq_length
    bits = [float(row.split("\t")[2]) for row in rows]
    assert math.isclose(np.mean(bits), evaluate.bits_per_char(expected), abs_tol=1e-3)
    assert (tmp_path / "s.html").read_text().count("bits\">") == len(rows)


@pytest.mark.slow
def test_evaluate_warns_when_cleaning_removes_most_of_a_text_and_refuses_one_without_letters(run_dir, tmp_path):
    mostly_removed = tmp_path / "mostly.txt"
    mostly_removed.write_text("Война и мир, глава первая. the union is strong. " * 6)
    result = run_script("evaluate.py", "--workdir", str(run_dir), "--text", str(mostly_removed))
    assert result.returncode == 0, result.stderr
    assert "warning: cleaning removed 42% of the characters of" in result.stderr
    assert 'keep_chars=""' in result.stderr
    symbols = tmp_path / "symbols.txt"
    symbols.write_text("+*= ... ??? ---\n" * 20)
    result = run_script("evaluate.py", "--workdir", str(run_dir), "--text", str(symbols))
    assert result.returncode == 2 and "no letter or digit left after cleaning" in result.stderr


def evaluate_json(run_dir, *flags: str) -> dict:
    result = run_script("evaluate.py", "--workdir", str(run_dir), "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_evaluate_scores_each_protocol_dynamic_and_the_ngram_mixture(run, run_dir):
    val_ids, first = run.corpus().val_ids, run.config.data.seq_length
    stream = evaluate.per_char_nll(run.graphdef, run.params, val_ids, evaluate.Scoring("stream", first, 1, 1, 1))
    result = evaluate_json(run_dir, "--protocol", "stream", "--mix_ngram", "5")
    assert result["protocol"] == "stream" and math.isclose(result["val_loss"], evaluate.average(stream), rel_tol=1e-6)
    ngram = KneserNey(run.corpus().train_ids, 5, run.vocab.size).per_char_nll(val_ids, first)
    mixed, weights = mixture.cross_fitted_nll(stream, ngram)
    assert result["mixture"]["model_weights"] == pytest.approx(list(weights), rel=1e-5)
    assert result["mixture"]["val_loss"] == pytest.approx(evaluate.average(mixed), rel=1e-6)

    scoring = evaluate.Scoring("dynamic", first, 1, 1, 1, {"learning_rate": 1e-3, "decay": 0.01, "segment_length": 30},
                               run.corpus().train_ids)
    dynamic = evaluate.per_char_nll(run.graphdef, run.params, val_ids, scoring)
    result = evaluate_json(run_dir, "--dynamic", "--dynamic_lr=1e-3", "--dynamic_decay=0.01", "--dynamic_segment=30")
    assert (
        result["protocol"].startswith("dynamic")
        and result["val_loss"] == pytest.approx(evaluate.average(dynamic), rel=1e-6)
    )


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--protocol", "exact"], "--protocol"),
    (["--dynamic", "--protocol", "window"], "drop --protocol"),
    (["--mix_ngram", "-1"], "--mix_ngram=-1"),
    (["--mix_ngram", "40"], "use an order <= seq_length + 1 = 21"),
    (["--dynamic_lr", "1e-3"], "--dynamic_lr only acts with --dynamic"),
    (["--text", "x.txt", "--split", "val"], "give one of them"),
    (["--dynamic", "--dynamic_decay", "2"], "--dynamic_decay=2.0"),
    (["--split", "test"], "no test split"),
])
def test_evaluate_refuses_bad_settings_in_one_line(run_dir, flags, message):
    result = run_script("evaluate.py", "--workdir", str(run_dir), *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_on_the_test_split_the_mixture_weight_is_fitted_on_validation(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    tiny_config.data.test_fraction = 0.1
    train_and_evaluate(tiny_config, tmp_path)
    result = evaluate_json(tmp_path, "--split", "test", "--protocol", "stream", "--mix_ngram", "4")
    run = trained_run.load(tmp_path)
    corpus, first = run.corpus(), tiny_config.data.seq_length
    ngram = KneserNey(corpus.train_ids, 4, run.vocab.size)

    def stream(ids):
        return evaluate.per_char_nll(run.graphdef, run.params, ids, evaluate.Scoring("stream", first, 1, 1, 1))

    weight = mixture.fit_weight(stream(corpus.val_ids), ngram.per_char_nll(corpus.val_ids, first))
    assert (
        result["mixture"]["fitted_on"] == "validation"
        and result["mixture"]["model_weights"] == pytest.approx([weight])
    )
    mixed = mixture.mixed_nll(stream(corpus.test_ids), ngram.per_char_nll(corpus.test_ids, first), weight)
    assert result["mixture"]["test_loss"] == pytest.approx(evaluate.average(mixed), rel=1e-6)

"""scripts/benchmark.py runs every section and reports the fields README and notes quote."""

import json

from tests.conftest import run_script

REPORTED = {
    "train_step_seconds", "chars_per_second", "gflops_per_second", "peak_gflops_per_second", "peak_rss_mib",
    "eval_chars_per_second", "generate_chars_per_second", "generate_chars_per_second_lab_method",
}


def test_every_section_reports_positive_numbers():
    result = run_script(
        "benchmark.py", "--config", "configs/tiny.py", "--train_steps=2", "--repeats=1", "--length=5",
        "--lab_length=2", "--eval_chars=500", "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert REPORTED <= report.keys()
    numbers = [report[k] for k in ("train_step_seconds", "chars_per_second", "eval_chars_per_second")]
    numbers += [*report["generate_chars_per_second"].values(), *report["generate_chars_per_second_lab_method"].values()]
    assert all(n > 0 for n in numbers)
    assert report["train_step_seconds_autodiff_lstm"] > 0  # The tiny config's cell is an LSTM.

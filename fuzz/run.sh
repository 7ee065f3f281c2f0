#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each (default 60 s; `fuzz/run.sh 600` for longer),
# starting from the committed seeds, the regressions and the local corpus, and prints
# executions and crashes per target. scripts/test.sh (and so CI) runs it with 30 s a target.
# Needs a nightly toolchain: without one it says so and stops (the seeds and regressions still
# run on stable as tests/tests/fuzz_inputs.rs). cargo-fuzz is installed here if missing. A crash
# leaves its input under fuzz/artifacts/<target>/ and fails the run: fix it, then commit the
# input under fuzz/regressions/<target>/ so the replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain on this machine, so the cargo-fuzz targets did not run;"
  echo "fuzz: their seeds and regression inputs ran on stable (tests/tests/fuzz_inputs.rs)."
  echo "fuzz: to fuzz here: rustup toolchain install nightly --profile minimal"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
status=0
for target in form_definition expression answers protocol; do
  mkdir -p "corpus/$target" "regressions/$target"
  log="target/$target.log"
  set +e
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(find "artifacts/$target" -type f 2>/dev/null | wc -l)
  echo "fuzz: $target: ${runs:-0} executions in ${seconds} s, exit $rc, ${crashes} crash file(s)"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    tail -n 40 "$log"
    find "artifacts/$target" -type f -exec sh -c 'echo "fuzz: input $1 (base64):"; base64 -w0 "$1"; echo' _ {} \;
  fi
done
exit $status

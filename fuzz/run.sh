#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each (default 60 s; `fuzz/run.sh 600` for longer),
# starting from the committed seeds and the local corpus, and prints executions and crashes per
# target. Needs a nightly toolchain and cargo-fuzz (installed here if missing). A crash leaves
# its input under fuzz/artifacts/<target>/; it becomes a regression test in the crate it hit.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
status=0
for target in form_definition expression answers protocol; do
  mkdir -p "corpus/$target"
  log="target/$target.log"
  set +e
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=$(ls "artifacts/$target" 2>/dev/null | wc -l)
  echo "$target: ${runs:-0} executions in ${seconds} s, exit $rc, ${crashes} crash file(s)"
  [ "$rc" -eq 0 ] || status=1
done
exit $status

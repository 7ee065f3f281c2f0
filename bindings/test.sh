#!/usr/bin/env bash
# Builds the Rust library, generates the Kotlin and Swift bindings from it (uniffi library mode),
# and runs both suites against the real library and a real `zoufang serve`: Kotlin on the JVM,
# Swift with swiftc in a Debian trixie root (test-swift.sh). Prints "kotlin: N passed, N failed"
# and "swift: N passed, N failed"; exits non-zero if either suite fails or runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p zoufang-ffi -p uniffi-bindgen -p zoufang
lib=target/debug/libzoufang_ffi.so
gen=bindings/kotlin/target/generated-sources/uniffi
rm -rf "$gen"
cargo run --locked -q -p uniffi-bindgen -- generate "$lib" --language kotlin --out-dir "$gen" --no-format

cd bindings/kotlin
set +e
mvn -B -q test
status=$?
set -e
read -r tests failures errors skipped < <(awk -F'"' '
  /<testsuite / { for (i = 1; i < NF; i++) {
      if ($i ~ / tests=$/) t += $(i+1); if ($i ~ / failures=$/) f += $(i+1);
      if ($i ~ / errors=$/) e += $(i+1); if ($i ~ / skipped=$/) s += $(i+1) } }
  END { print t + 0, f + 0, e + 0, s + 0 }' target/surefire-reports/TEST-*.xml 2>/dev/null || echo "0 0 0 0")
failed=$((failures + errors))
echo "kotlin: $((tests - failed - skipped)) passed, ${failed} failed"
kotlin_ok=1
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$tests" -eq 0 ]; then
  kotlin_ok=0
fi
cd ../..
swift_ok=1
bindings/test-swift.sh || swift_ok=0
[ "$kotlin_ok" -eq 1 ] && [ "$swift_ok" -eq 1 ]

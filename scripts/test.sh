#!/usr/bin/env bash
# Every check of the project, as CI runs it: formatting, lints (warnings are errors), all tests
# of the workspace (unit, property, store, crash, sync, CLI), the core without encryption and the
# bindings without their HTTP transport (the two feature sets apps may build), the server suites again on
# PostgreSQL (scripts/with-postgres.sh), the crypto crate on aarch64 under qemu
# (scripts/test-aarch64.sh), the Kotlin and Swift bindings suites (bindings/test.sh),
# then each cargo-fuzz target for ZOUFANG_FUZZ_SECONDS (30) when a nightly toolchain is present
# (fuzz/run.sh says plainly when it is not). Ends with one line "tests: N passed, N failed" and a
# non-zero exit if anything failed, a fuzz target crashed, or no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The bindings as an app with its own HTTP stack builds them: another set of cfg'd code.
cargo clippy -p zoufang-ffi --no-default-features --all-targets --locked -- -D warnings
echo "== cargo test"
mkdir -p target
set +e
cargo test --workspace --locked 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
# The workspace builds the core with encryption (SQLCipher); the store's tests run once more on a
# core built without it, where a key must be refused rather than ignored.
echo "== cargo test -p zoufang-core (built without the sqlcipher feature)"
cargo test -p zoufang-core --locked --test store 2>&1 | tee -a target/test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== cargo test -p zoufang-ffi (built without the HTTP transport)"
cargo test -p zoufang-ffi --no-default-features --locked --lib 2>&1 | tee -a target/test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The end-to-end server suites once more, on PostgreSQL: a throwaway cluster, a fresh database
# per test server. One test at a time: ten servers with their connection pools on a 2-core
# machine would measure the machine, not the server.
echo "== cargo test -p zoufang-tests on PostgreSQL"
scripts/with-postgres.sh cargo test -p zoufang-tests --features postgres --locked -- --test-threads=1 2>&1 | tee -a target/test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The ciphers once more on the phones' CPU (aarch64, under qemu): their vector paths differ.
echo "== cargo test -p zoufang-crypto on aarch64 (qemu)"
scripts/test-aarch64.sh 2>&1 | tee -a target/test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' target/test.log)
echo "rust: ${passed} passed, ${failed} failed"

echo "== bindings (Kotlin on the JVM, Swift in a trixie root)"
set +e
bindings/test.sh 2>&1 | tee target/bindings.log
bstatus=${PIPESTATUS[0]}
set -e
read -r kpassed kfailed < <(awk '/(kotlin|swift): [0-9]+ passed, [0-9]+ failed/ {
    sub(/.*(kotlin|swift): /, ""); p += $1; f += $3; n++ } END { print (n == 2 ? p : 0), f + 0 }' target/bindings.log)
kpassed=${kpassed:-0}
kfailed=${kfailed:-0}

echo "== fuzz (each target ${ZOUFANG_FUZZ_SECONDS:-30} s, nightly only)"
set +e
fuzz/run.sh "${ZOUFANG_FUZZ_SECONDS:-30}" 2>&1 | tee target/fuzz.log
fstatus=${PIPESTATUS[0]}
set -e
echo "tests: $((passed + kpassed)) passed, $((failed + kfailed)) failed"
if [ "$fstatus" -ne 0 ]; then
  echo "fuzz: a target crashed (its input is printed above)"
fi
if [ "$status" -ne 0 ] || [ "$bstatus" -ne 0 ] || [ "$fstatus" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$kfailed" -ne 0 ] || [ "$passed" -eq 0 ] || [ "$kpassed" -eq 0 ]; then
  exit 1
fi

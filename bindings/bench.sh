#!/usr/bin/env bash
# The bindings' benchmark: the Kotlin-side time of validating a full visit through the generated
# bindings and JNA, against the same call made from Rust in the same run, as a ratio; and the
# stripped size of the release library. Release builds on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release -p zoufang-ffi -p zoufang
cargo build --locked -q -p uniffi-bindgen
lib=target/release/libzoufang_ffi.so
gen=bindings/kotlin/target/generated-sources/uniffi
rm -rf "$gen"
cargo run --locked -q -p uniffi-bindgen -- generate "$lib" --language kotlin --out-dir "$gen" --no-format

stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
strip -o "$stripped" "$lib"
echo "library: $(stat -c %s "$lib") bytes, $(stat -c %s "$stripped") stripped ($lib)"

cd bindings/kotlin
mvn -B -q test-compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
java -Djna.library.path="$PWD/../../target/release" \
  -Dzoufang.cli="$PWD/../../target/release/zoufang" \
  -cp "target/classes:target/test-classes:$(cat target/classpath.txt)" \
  cn.zoufang.core.ValidateBenchKt

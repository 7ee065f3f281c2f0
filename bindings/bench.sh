#!/usr/bin/env bash
# The bindings' benchmark: the Kotlin-side time of validating a full visit through the generated
# bindings and JNA, against the same call made from Rust in the same run, as a ratio; and the
# stripped size of the release library as shipped, with and without the built-in HTTP
# transport. Release builds on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release -p zoufang
cargo build --locked -q -p uniffi-bindgen
lib=target/release/libzoufang_ffi.so

# The library as an app ships it: the cdylib alone (built together with the rlib and staticlib
# it keeps every public item), stripped; without and then with the built-in HTTP transport. The
# second stays in place for the Kotlin side below.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
for variant in "--no-default-features" ""; do
  # shellcheck disable=SC2086
  cargo rustc --locked -q --release -p zoufang-ffi --lib --crate-type cdylib $variant
  strip -o "$stripped" "$lib"
  echo "library ${variant:-(default features)}: $(stat -c %s "$stripped") bytes stripped (target <= 6000000)"
done

gen=bindings/kotlin/target/generated-sources/uniffi
rm -rf "$gen"
cargo run --locked -q -p uniffi-bindgen -- generate "$lib" --language kotlin --out-dir "$gen" --no-format

cd bindings/kotlin
mvn -B -q test-compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
java -Djna.library.path="$PWD/../../target/release" \
  -Dzoufang.cli="$PWD/../../target/release/zoufang" \
  -cp "target/classes:target/test-classes:$(cat target/classpath.txt)" \
  cn.zoufang.core.ValidateBenchKt

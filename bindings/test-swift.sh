#!/usr/bin/env bash
# Generates the Swift bindings from the built library and runs the Swift package's XCTest suite
# with a real Swift compiler: in a Debian trixie root with swiftlang (Debian 12 has no Swift),
# against the host-built library and a real `zoufang serve`.
# Prints "swift: N passed, N failed"; exits non-zero if the suite fails or runs no test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${ZOUFANG_SWIFT_ROOT:-/var/tmp/zoufang-swift-root}
bindings/swift/prepare-root.sh "$root"

cargo build --locked -p zoufang-ffi -p uniffi-bindgen -p zoufang
gen=target/uniffi-swift
rm -rf "$gen"
cargo run --locked -q -p uniffi-bindgen -- generate target/debug/libzoufang_ffi.so --language swift --out-dir "$gen" --no-format

pkg=bindings/swift
mkdir -p "$pkg/Sources/Zoufang" "$pkg/Sources/ZoufangFFI"
cp "$gen/Zoufang.swift" "$pkg/Sources/Zoufang/Zoufang.swift"
cp "$gen/ZoufangFFI.h" "$pkg/Sources/ZoufangFFI/ZoufangFFI.h"
cp "$gen/ZoufangFFI.modulemap" "$pkg/Sources/ZoufangFFI/module.modulemap"

# Into the root: the package (its .build stays there between runs), the library, the CLI.
work="$root/work"
mkdir -p "$work/lib" "$work/zoufang-swift"
cp --remove-destination target/debug/libzoufang_ffi.so "$work/lib/"
cp -r "$pkg/Package.swift" "$pkg/Sources" "$pkg/Tests" "$work/zoufang-swift/"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"

# A server on the host's loopback (shared with the root) and one-time tokens for the tests.
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tokens=""
# Encrypted at rest, as a deployment is: a fresh server key for this run.
ZOUFANG_SERVER_KEY=$(target/debug/zoufang admin new-key)
export ZOUFANG_SERVER_KEY
for user in coord-a coord-b coord-s; do
  target/debug/zoufang admin --data "$data" user-add "$user" --role coordinator --area 513431104201 >/dev/null
  var="ZOUFANG_TOKEN_$(echo "$user" | tr 'a-z-' 'A-Z_')"
  tokens="$tokens $var=$(target/debug/zoufang admin --data "$data" enroll-token "$user")"
done
target/debug/zoufang serve --data "$data" --listen "127.0.0.1:$port" 2>"$data/server.log" &
server_pid=$!
# The suite's stores go to a temporary directory of this run inside the root, removed afterwards.
rm -rf "$work/tmp" && mkdir -p "$work/tmp"
trap 'kill $server_pid 2>/dev/null; rm -rf "$data" "$work/tmp"' EXIT
for _ in $(seq 100); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

set +e
chroot "$root" /bin/sh -c 'cd /work/zoufang-swift && \
  LD_LIBRARY_PATH=/work/lib HOME=/tmp TMPDIR=/work/tmp ZOUFANG_SERVER_URL=http://127.0.0.1:'"$port"' '"$tokens"' \
  timeout 600 swift test -Xlinker -L/work/lib -Xlinker -rpath -Xlinker /work/lib 2>&1' | tee target/swift-test.log
status=${PIPESTATUS[0]}
set -e
# XCTest's summary: "Executed N tests, with M failures (...)"; the last one is the total.
read -r tests failures < <(grep -Eo 'Executed [0-9]+ tests?, with [0-9]+ failures?' target/swift-test.log | tail -n 1 | awk '{print $2, $5}')
tests=${tests:-0}
failures=${failures:-0}
echo "swift: $((tests - failures)) passed, ${failures} failed"
if [ "$status" -ne 0 ] || [ "$failures" -ne 0 ] || [ "$tests" -eq 0 ]; then
  exit 1
fi

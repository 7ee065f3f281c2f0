#!/usr/bin/env bash
# zoufang-crypto's tests built for aarch64, the phones' CPU, and run under qemu: the SM4 path on
# ARMv8's AES instructions against the portable code, and stores written by the OpenSSL-era
# providers opened by today's. Needs the rustup target, Debian's gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross and qemu-user (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test -p zoufang-crypto --locked --target "$target"

#!/usr/bin/env bash
# Debian 12 has no Swift: prepare a Debian trixie root with swiftlang (6.0.x) once, and reuse it.
# Usage: prepare-root.sh [DIR]   (default $ZOUFANG_SWIFT_ROOT or /var/tmp/zoufang-swift-root)
set -euo pipefail
root=${1:-${ZOUFANG_SWIFT_ROOT:-/var/tmp/zoufang-swift-root}}
# The root's own symlinks are absolute: look at the real binary.
if [ -x "$root/usr/libexec/swift/bin/swift" ]; then
  echo "swift root ready: $root"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
mkdir -p "$root"
debootstrap --variant=minbase trixie "$root" >/dev/null
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends swiftlang libc6-dev >/dev/null && apt-get clean'
echo "swift root ready: $root"

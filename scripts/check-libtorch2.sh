#!/usr/bin/env bash
# Builds the addon against libtorch 2.x and runs the test suite on that build. Debian 12 has only
# libtorch 1.13, so this uses Debian 13's libtorch-dev (2.6, CPU) in a debootstrapped trixie root
# (minbase + g++, cmake, libtorch-dev, OpenBLAS; ~2 min to make), with this machine's Node binary
# and node_modules copied in. CI runs it after `npm test` (.ci/run).
# Needs root (debootstrap, chroot, bind mounts of /proc and /dev) and the Debian mirror.
#   TDPO_LIBTORCH2_ROOT=/path   keep the root there and reuse it (default: a temporary one)
# The package test is left out: it installs from the npm registry with npm, which the root lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
say() { echo "check-libtorch2: $*"; }

if [ "$(id -u)" != 0 ]; then
  say "needs root (debootstrap, chroot, mount); run it as root"
  exit 1
fi
[ -f dist/esm/index.js ] && [ -d node_modules/vitest ] || { say "run 'npm test' (or node scripts/setup.js) first"; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null

root=${TDPO_LIBTORCH2_ROOT:-$(mktemp -d /tmp/tdpo-libtorch2.XXXXXX)}
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  umount "$root/dev" 2>/dev/null || true
  [ -n "${TDPO_LIBTORCH2_ROOT:-}" ] || rm -rf --one-file-system "$root"
}
trap cleanup EXIT

if [ ! -f "$root/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake" ]; then
  say "debootstrap trixie with libtorch-dev into $root"
  debootstrap --variant=minbase --include=g++,cmake,make,libtorch-dev,libopenblas0-pthread \
    trixie "$root" http://deb.debian.org/debian > "$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log"; say "debootstrap failed"; exit 1; }
  rm -f "$root.debootstrap.log"
fi
cp "$(command -v node)" "$root/usr/local/bin/node"
rm -rf "$root/work" && mkdir -p "$root/work"
tar -C "$repo" --exclude=./build --exclude=./.git --exclude=./.device --exclude=./demo-output \
  --exclude=./.bench-tmp --exclude=./examples/synthetic/data --exclude=./examples/synthetic/out -cf - . \
  | tar -C "$root/work" -xf -
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root sh -c "cd /work && $1"; }
say "building against $(in_root "dpkg-query -W -f='libtorch \${Version}' libtorch-dev")"
in_root "node scripts/build-native.js --parallel $(nproc)" > /tmp/tdpo-libtorch2-build.log 2>&1 \
  || { tail -40 /tmp/tdpo-libtorch2-build.log; say "the build failed (whole log: /tmp/tdpo-libtorch2-build.log)"; exit 1; }
in_root "node --input-type=module -e \"import { buildInfo } from './dist/esm/index.js'; console.log('check-libtorch2: loaded', JSON.stringify(buildInfo()))\""
in_root "node node_modules/vitest/vitest.mjs run --exclude test/package.test.ts"
say "passed"

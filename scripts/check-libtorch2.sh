#!/usr/bin/env bash
# Builds the addon against libtorch 2.x and runs the test suite on that build. Debian 12 has only
# libtorch 1.13, so this uses Debian 13's libtorch-dev (2.6, CPU) in a debootstrapped trixie root
# (minbase + g++, cmake, libtorch-dev, OpenBLAS; ~2 min to make), with this machine's Node binary
# and node_modules copied in. Not part of CI: see the README on the intermittent crash at load.
# Needs root (debootstrap, chroot, bind mounts of /proc and /dev) and the Debian mirror.
#   TDPO_LIBTORCH2_ROOT=/path   keep the root there and reuse it (default: a temporary one)
#   --cuda   Debian 13's CUDA build instead (libtorch-cuda-dev, nvidia-cuda-toolkit 12.4 from
#            contrib/non-free; the root grows to ~11 GB): build and link only. The addon cannot
#            load there: cuDNN's Debian package downloads from NVIDIA (unreachable), and no GPU.
# The package test is left out: it installs from the npm registry with npm, which the root lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cuda=false
[ "${1:-}" = "--cuda" ] && cuda=true
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
  [ -n "${TDPO_LIBTORCH2_ROOT:-}" ] || rm -rf --one-file-system "$root" "$root.apt.log"
}
trap cleanup EXIT

if [ ! -f "$root/usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake" ]; then
  say "debootstrap trixie with libtorch-dev into $root"
  debootstrap --variant=minbase --include=g++,cmake,make,libtorch-dev,libopenblas0-pthread,libgloo-dev \
    trixie "$root" http://deb.debian.org/debian > "$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log"; say "debootstrap failed"; exit 1; }
  rm -f "$root.debootstrap.log"
fi
cp "$(command -v node)" "$root/usr/local/bin/node"
rm -rf "$root/work" && mkdir -p "$root/work"
tar -C "$repo" --exclude=./build --exclude=./.git --exclude=./.device --exclude=./demo-output \
  --exclude=./.libtorch-wheel --exclude=./.venv-interop \
  --exclude=./.bench-tmp --exclude=./examples/synthetic/data --exclude=./examples/synthetic/out -cf - . \
  | tar -C "$root/work" -xf -
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"

# Debian's libtorch 2.6 links OpenMPI and UCX; UCX's memory hooks, patched in at load time, are
# the suspect in ~1% of loads dying in V8 (README, Building from source): they stay off here.
in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
    UCX_MEM_EVENTS=no UCX_MEM_MALLOC_HOOKS=no UCX_MEM_MMAP_HOOK_MODE=none sh -c "cd /work && $1"
}
torch_pkg=libtorch-dev
if $cuda; then
  torch_pkg=libtorch-cuda-dev
  if ! in_root "command -v nvcc >/dev/null && dpkg-query -W libtorch-cuda-dev >/dev/null 2>&1"; then
    say "installing libtorch-cuda-dev and nvidia-cuda-toolkit (contrib, non-free)"
    echo "deb http://deb.debian.org/debian trixie main contrib non-free" > "$root/etc/apt/sources.list"
    # nvidia-cudnn's install script fails (it downloads from NVIDIA); the build needs no cuDNN.
    in_root "DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends libtorch-cuda-dev nvidia-cuda-toolkit" \
      > "$root.apt.log" 2>&1 || grep -q "nvidia-cudnn" "$root.apt.log" || { tail -20 "$root.apt.log"; exit 1; }
  fi
fi
say "building against $(in_root "dpkg-query -W -f='\${Package} \${Version}' $torch_pkg")"
in_root "node scripts/build-native.js --parallel $(nproc)" > /tmp/tdpo-libtorch2-build.log 2>&1 \
  || { tail -40 /tmp/tdpo-libtorch2-build.log; say "the build failed (whole log: /tmp/tdpo-libtorch2-build.log)"; exit 1; }
if $cuda; then
  in_root "ldd build/Release/tdpo.node" | grep -E "libtorch_cuda|libc10_cuda|libcudart" | sed 's/^/check-libtorch2: linked /'
  in_root "ldd build/Release/tdpo.node" | grep -q libtorch_cuda || { say "libtorch_cuda is not linked"; exit 1; }
  say "built and linked against the CUDA build (not loadable here: no cuDNN, no GPU)"
  exit 0
fi
in_root "node --input-type=module -e \"import { buildInfo } from './dist/esm/index.js'; console.log('check-libtorch2: loaded', JSON.stringify(buildInfo()))\""
in_root "node node_modules/vitest/vitest.mjs run --exclude test/package.test.ts"
say "passed"

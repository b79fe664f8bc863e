#!/usr/bin/env bash
# Packs what the GPU check (scripts/device/check.sh) needs and the device machine lacks, into
# .device/ (git-ignored): this machine's Node binary and node_modules (without the TypeScript
# compiler: dist/ travels built), both xz-compressed to fit the 64 MiB the device tool carries.
# Then run there:  bash scripts/device/check.sh   with carry [".device", "dist"].
set -euo pipefail
cd "$(dirname "$0")/../.."
node scripts/setup.js --quiet   # node_modules and a fresh dist/
mkdir -p .device
xz -T0 -6 -c "$(command -v node)" > .device/node.xz
tar --exclude='node_modules/@typescript' --exclude='node_modules/.cache' --exclude='node_modules/.vite' \
  -cf - node_modules | xz -T0 -6 > .device/node_modules.tar.xz
du -ch .device/* dist | sed 's/^/pack: /'

#!/usr/bin/env bash
# The GPU check, one command on the device machine (a copy of this working tree; no network):
#   bash scripts/device/pack.sh                 here, first
#   bash scripts/device/check.sh                there, with carry [".device", "dist"]
# In the order of what matters most, each step bounded, so that the whole fits one call of the
# device tool (600 s at most): it builds the addon against that machine's PyTorch (2.x with CUDA),
# runs the CUDA tests (test/device.test.ts: models, training, NCCL; skipped on the CPU-only
# development machine), benchmarks the train step (scripts/device/train-bench.sh) and the model
# runner on the GPU, then runs the rest of the suite against that libtorch while time is left.
# Bounds, in whole seconds (0 skips the step): TDPO_CHECK_TESTS_S (240), TDPO_CHECK_TRAIN_S (270),
# TDPO_CHECK_SUITE_S (150); TDPO_CHECK_MODEL_BENCH=0 skips the model bench; no step runs past
# TDPO_CHECK_TOTAL_S (540) from the start. Logs and reports go to $OUT (default .device-out/).
# Also runs on a CPU machine with a CMake-packaged libtorch (the CUDA parts then skip), which is
# how it was checked before any GPU run.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/.device-out}
mkdir -p "$OUT"
if [ -z "${TDPO_CHECK_LOGGED:-}" ]; then   # rerun under tee, waited for, so no line is lost
  TDPO_CHECK_LOGGED=1 OUT=$OUT bash "$0" "$@" 2>&1 | tee "$OUT/check.log"
  exit "${PIPESTATUS[0]}"
fi
step() { echo; echo "== $* ($(date +%T))"; }
failed=()
for v in TDPO_CHECK_TOTAL_S TDPO_CHECK_TESTS_S TDPO_CHECK_TRAIN_S TDPO_CHECK_SUITE_S; do
  case ${!v:-0} in *[!0-9]*) echo "check: $v must be whole seconds, got '${!v}'"; exit 2 ;; esac
done
deadline=$((SECONDS + ${TDPO_CHECK_TOTAL_S:-540}))
# A step's bound: its own (0: skipped), cut to what is left before the deadline (0 when none is).
bound() {
  local left=$((deadline - SECONDS))
  if [ "$1" -eq 0 ] || [ $left -le 0 ]; then echo 0; elif [ "$1" -lt $left ]; then echo "$1"; else echo $left; fi
}
has_cuda() { node --input-type=module -e "import { buildInfo } from './dist/esm/index.js'; process.exit(buildInfo().cuda ? 0 : 1)"; }
# xz, or Python's lzma where xz is not installed.
unxz_to() {
  if command -v xz >/dev/null; then xz -dc "$2" > "$1"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[2]), open(sys.argv[1], "wb"))' "$1" "$2"; fi
}

step "node"
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  mkdir -p /tmp/tdpo-node/bin
  unxz_to /tmp/tdpo-node/bin/node .device/node.xz && chmod +x /tmp/tdpo-node/bin/node
  export PATH=/tmp/tdpo-node/bin:$PATH
fi
node --version
if [ ! -d node_modules/vitest ]; then
  if command -v xz >/dev/null; then tar -xJf .device/node_modules.tar.xz
  else python3 -c 'import tarfile; tarfile.open(".device/node_modules.tar.xz").extractall()'; fi
fi

step "torch and GPU"
PY=${TDPO_PYTHON:-python3}
export TDPO_PYTHON=$PY
[ -d /usr/local/cuda/bin ] && export PATH=$PATH:/usr/local/cuda/bin
command -v nvcc >/dev/null && export CUDACXX=${CUDACXX:-$(command -v nvcc)}
for t in c++ cmake nvcc; do command -v $t >/dev/null && echo "$t: $($t --version | grep -m1 -E '[0-9]+\.[0-9]+')" || echo "no $t"; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
  || echo "no torch in $PY"
$PY -c 'import transformers; print("transformers", transformers.__version__)' 2>/dev/null || echo "no transformers in $PY"
if [ -z "${TDPO_TORCH_DIR:-}" ]; then
  prefix=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  [ -f "$prefix/Torch/TorchConfig.cmake" ] && export TDPO_TORCH_DIR=$prefix/Torch
fi
echo "TDPO_TORCH_DIR=${TDPO_TORCH_DIR:-<unset: the system libtorch>}"

step "native build"
rm -rf build
# The log stays out of $OUT unless the build fails: the device tool brings back 8 files at most.
log=$(mktemp)
if ! node scripts/build-native.js --parallel "$(nproc)" > "$log" 2>&1; then
  cp "$log" "$OUT/build.log"
  tail -60 "$log"
  echo "check: the native build failed; the whole log is build.log"
  exit 1
fi
grep -E "tdpo: |warning: .*deprecated" "$log" | head -20
ldd build/Release/tdpo.node | grep -E "torch|gomp|cuda" || true
node --input-type=module -e "import { buildInfo } from './dist/esm/index.js'; console.log(JSON.stringify(buildInfo()))"

t=$(bound "${TDPO_CHECK_TESTS_S:-240}")
step "CUDA tests (up to $t s)"
# Only what needs a GPU: the CPU model, generation and transformers tests run in CI (.ci/run), and
# against this libtorch in the last step where time is left.
if [ "$t" -eq 0 ]; then
  echo "skipped (TDPO_CHECK_TESTS_S=0, or no time left)"
else
  timeout "$t" node node_modules/vitest/vitest.mjs run test/device.test.ts || failed+=("CUDA tests")
fi

t=$(bound "${TDPO_CHECK_TRAIN_S:-270}")
step "train benchmark on the GPU: Pythia-1B shape, bf16, TDPO2 (up to $t s)"
# tdpo's three configurations at 8 pairs x T=512, the official TDPO step in plain PyTorch on the
# same GPU, then the largest pairs per step that fit (doubling from 8) for tdpo fused linear, tdpo
# materialised and plain PyTorch, and both memory peaks at plain PyTorch's largest.
if [ "$t" -eq 0 ]; then
  echo "skipped (TDPO_CHECK_TRAIN_S=0, or no time left)"
elif has_cuda; then
  TDPO_PY=$PY OUT=$OUT timeout "$t" bash scripts/device/train-bench.sh
  rc=$?
  [ $rc -eq 124 ] && echo "check: the train benchmark ran out of its time (what it printed stands; the largest-batch probes come last)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && failed+=("train bench")
else
  echo "no CUDA device in this build: skipped"
fi

step "model benchmark on the GPU"
if [ "${TDPO_CHECK_MODEL_BENCH:-1}" = 0 ]; then
  echo "skipped (TDPO_CHECK_MODEL_BENCH=0)"
elif has_cuda; then
  for dtype in float32 bfloat16; do
    t=$(bound 60)
    [ "$t" -eq 0 ] && { echo "$dtype: no time left"; continue; }
    timeout "$t" node bin/tdpo.js bench --model --device cuda --dtype "$dtype" --runs 5 --json > "$OUT/bench-model-cuda-$dtype.json" \
      && node -e "const r=require('$OUT/bench-model-cuda-$dtype.json'); console.log('$dtype', 'forward', r.forward.medianMs.toFixed(1), 'ms =', r.forward.tokensPerSecond.toFixed(0), 'tokens/s; generate', r.generate.cachedTokensPerSecond.toFixed(1), 'vs', r.generate.uncachedTokensPerSecond.toFixed(1), 'new tokens/s')" \
      || failed+=("bench $dtype")
  done
else
  echo "no CUDA device in this build: skipped"
fi

t=$(bound "${TDPO_CHECK_SUITE_S:-150}")
step "the rest of the suite against this libtorch (up to $t s)"
# package.test.ts installs from the npm registry, which the device machine cannot reach.
if [ "$t" -eq 0 ]; then
  echo "skipped (TDPO_CHECK_SUITE_S=0, or no time left)"
else
  timeout "$t" node node_modules/vitest/vitest.mjs run --exclude test/package.test.ts --exclude test/device.test.ts
  rc=$?
  [ $rc -eq 124 ] && echo "check: the suite ran out of its time (not a failure of any test)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && failed+=("suite")
fi

step "summary"
if [ ${#failed[@]} -eq 0 ]; then echo "check: all passed"; else echo "check: FAILED: ${failed[*]}"; exit 1; fi

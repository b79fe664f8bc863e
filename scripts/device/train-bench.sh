#!/usr/bin/env bash
# The GPU train benchmark of issue 10, run by check.sh on the device machine (TDPO_PY: Python with
# PyTorch and transformers; OUT: where the JSON goes). Pythia-1B shape, bf16, TDPO2, T=512:
#   1. tdpo bench --train: materialised / fused linear / + checkpointing at 8 pairs (the build's
#      default attention: SDPA on libtorch >= 2.3), then the fused linear with eager attention;
#   2. the official TDPO step in plain PyTorch (torch_tdpo_step.py) at 8 pairs;
#   3. the largest pairs per step plain PyTorch fits (doubling from 8), and tdpo fused linear, with
#      and without gradient checkpointing, at that size: time and memory against plain PyTorch's
#      there (the memory target's comparison);
#   4. the largest pairs per step tdpo fits, fused linear and materialised (least important: last,
#      where check.sh's time limit may cut it).
# Prints one summary line per figure; the targets are >= 1.3x faster and >= 3x less peak memory.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${TDPO_PY:-python3}
OUT=${OUT:-$PWD/.device-out}
mkdir -p "$OUT"
common=(--train --shape pythia-1b --device cuda --dtype bfloat16 -T 512)

node bin/tdpo.js bench "${common[@]}" --pairs 8 --runs 3 --json > "$OUT/train-bench-tdpo.json" || exit 1
$PY scripts/device/torch_tdpo_step.py --shape pythia-1b --pairs 8 --seq 512 --runs 3 > "$OUT/train-bench-torch.json" || exit 1
node -e '
const t = require(process.argv[1]), p = require(process.argv[2]);
const gb = (b) => (b / 1e9).toFixed(2) + " GB";
for (const r of t.rows) console.log(`tdpo ${r.name}: ${r.medianMs.toFixed(1)} ms, GPU peak ${r.devicePeakBytes === null ? "n/a" : gb(r.devicePeakBytes)}`);
console.log(`plain PyTorch (official TDPO step, autocast bf16): ${p.medianMs.toFixed(1)} ms, GPU peak ${gb(p.devicePeakBytes)}`);
const f = t.rows.find((r) => r.fusedLinear && !r.gradientCheckpointing);
console.log(`8 pairs: tdpo fused linear is ${(p.medianMs / f.medianMs).toFixed(2)}x the speed of plain PyTorch (target >= 1.3), ` +
  `peak ${f.devicePeakBytes ? (p.devicePeakBytes / f.devicePeakBytes).toFixed(2) + "x" : "n/a"} lower (target >= 3 at the largest batch below)`);
' "$OUT/train-bench-tdpo.json" "$OUT/train-bench-torch.json"

# Its JSON stays out of $OUT (the device tool brings back 8 files at most); the line below has it.
eager_json=$(mktemp --suffix .json)
node bin/tdpo.js bench "${common[@]}" --fused-linear on --attn-implementation eager --pairs 8 --runs 3 --json > "$eager_json" || exit 1
node -e '
const e = require(process.argv[1]).rows[0], d = require(process.argv[2]).rows.find((r) => r.fusedLinear && !r.gradientCheckpointing);
const gb = (b) => (b === null ? "n/a" : (b / 1e9).toFixed(2) + " GB");
console.log(`8 pairs, fused linear: ${d.attnImplementation} ${d.medianMs.toFixed(1)} ms, GPU peak ${gb(d.devicePeakBytes)}; ` +
  `eager ${e.medianMs.toFixed(1)} ms, GPU peak ${gb(e.devicePeakBytes)}: ${d.attnImplementation} is ${(e.medianMs / d.medianMs).toFixed(2)}x the speed`);
' "$eager_json" "$OUT/train-bench-tdpo.json"
rm -f "$eager_json"

$PY scripts/device/torch_tdpo_step.py --shape pythia-1b --pairs 8 --seq 512 --largest > "$OUT/train-bench-torch-largest.json" || exit 1
plain=$(node -p 'require(process.argv[1]).largestPairs ?? 0' "$OUT/train-bench-torch-largest.json")
echo "largest pairs per step at T=512, plain PyTorch: $plain"
if [ "$plain" -gt 0 ]; then
  # Fused linear, then fused linear + gradient checkpointing, each printed against plain PyTorch
  # there as soon as it has run.
  for v in fused:--fused-linear=on ckpt:--gradient-checkpointing; do
    f="$OUT/train-bench-tdpo-${v%%:*}-at-largest.json"
    node bin/tdpo.js bench "${common[@]}" "${v#*:}" --pairs "$plain" --runs 3 --json > "$f" || exit 1
    node -e '
const t = require(process.argv[1]).rows[0], p = require(process.argv[2]).atLargest;
console.log(`at ${p.pairs} pairs: plain PyTorch ${p.medianMs.toFixed(1)} ms, peak ${(p.devicePeakBytes / 1e9).toFixed(2)} GB; ` +
  `tdpo ${t.name} ${t.medianMs.toFixed(1)} ms, peak ${t.devicePeakBytes === null ? "n/a" : (t.devicePeakBytes / 1e9).toFixed(2) + " GB"}: ` +
  `${(p.medianMs / t.medianMs).toFixed(2)}x the speed (target >= 1.3), ${t.devicePeakBytes ? (p.devicePeakBytes / t.devicePeakBytes).toFixed(2) : "n/a"}x less memory (target >= 3)`);
' "$f" "$OUT/train-bench-torch-largest.json"
  done
fi

# The largest power-of-two pairs from 8 whose tdpo step runs (one timed step each).
largest() {
  local pairs=8 fits=0 probe_err
  probe_err=$(mktemp)
  while [ $pairs -le 1024 ]; do
    if ! node bin/tdpo.js bench "${common[@]}" "$@" --pairs $pairs --runs 1 --json > /dev/null 2> "$probe_err"; then
      grep -qi "out of memory" "$probe_err" || { echo "probe at $pairs pairs failed: $(tail -1 "$probe_err")" >&2; }
      break
    fi
    fits=$pairs
    pairs=$((pairs * 2))
  done
  echo $fits
}
echo "largest pairs per step at T=512, tdpo fused linear: $(largest --fused-linear on)"
echo "largest pairs per step at T=512, tdpo materialised: $(largest --fused-linear off)"

#!/usr/bin/env bash
# Median of N churn runs per I/O backend at --rate max, then one run at half the uring median
# (latency), then one run with the transport fault layer on. Writes JSON reports to $OUT_DIR.
# Usage: tools/churn-medians.sh [runs=3] [duration=10]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DUR=${2:-10}
OUT_DIR=${OUT_DIR:-/tmp/churn-medians}
BIN=${BIN:-target/release/statesync}
mkdir -p "$OUT_DIR"
[ -x "$BIN" ] || cargo build --release
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate_of() { python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['committed_per_s']))" "$1"; }
for io in uring mmsg; do
  for i in $(seq 1 "$RUNS"); do
    "$BIN" churn --duration "$DUR" --rate max --io "$io" --json "$OUT_DIR/max-$io-$i.json" > "$OUT_DIR/max-$io-$i.log"
    echo "$io run $i: $(rate_of "$OUT_DIR/max-$io-$i.json") committed/s"
  done
  m=$(for i in $(seq 1 "$RUNS"); do rate_of "$OUT_DIR/max-$io-$i.json"; done | median)
  echo "$io median: $m committed/s"
  echo "$m" > "$OUT_DIR/median-$io"
done
half=$(( $(cat "$OUT_DIR/median-uring") / 2 ))
"$BIN" churn --duration "$DUR" --rate "$half" --io uring --json "$OUT_DIR/half.json" --hdr-log "$OUT_DIR/hdr" > "$OUT_DIR/half.log"
echo "half rate ($half/s):"; grep -E "latency|digests|committed " "$OUT_DIR/half.log"
"$BIN" churn --duration "$DUR" --rate max --loss 0.01 --dup 0.005 --reorder 0.01 --json "$OUT_DIR/faults.json" > "$OUT_DIR/faults.log"
echo "faults (1% loss, 0.5% dup, 1% reorder):"; grep -E "committed |digests" "$OUT_DIR/faults.log"

#!/usr/bin/env bash
# Paired back-to-back comparison of two statesync builds on this machine: runs
# `churn --duration D` alternately with binary A and binary B (A first in odd pairs, B first in
# even ones), N pairs, then prints each run and
# the medians and the ratio B/A of committed/s and of standby_commit p99. On a shared, noisy
# machine only such same-series ratios compare builds; absolute figures drift with the load.
# Usage: tools/ab.sh BIN_A BIN_B [pairs=3] [duration=10] [extra churn args...]
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}; PAIRS=${3:-3}; DUR=${4:-10}; shift $(( $# < 4 ? $# : 4 ))
OUT_DIR=${OUT_DIR:-/tmp/ab}
mkdir -p "$OUT_DIR"
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(int(r['committed_per_s']), r['latency_us']['standby_commit']['p99'], round(r.get('wire_bytes_per_change',0),1), round(r.get('cpu_ns_per_change',0)))" "$1"; }
for i in $(seq 1 "$PAIRS"); do
  # Alternate which build runs first: the first run of a pair did better in 5 of 6 pairs of
  # two builds that the in-process bench could not tell apart (session 14).
  order="A B"; [ $((i % 2)) -eq 0 ] && order="B A"
  for side in $order; do
    bin=$A; [ "$side" = B ] && bin=$B
    "$bin" churn --duration "$DUR" --json "$OUT_DIR/$side-$i.json" "$@" > "$OUT_DIR/$side-$i.log" 2>&1 \
      || { echo "run $side $i failed: see $OUT_DIR/$side-$i.log"; exit 1; }
    echo "pair $i $side: committed/s p99_us wire_bytes cpu_ns_per_change: $(field "$OUT_DIR/$side-$i.json")"
  done
done
python3 - "$OUT_DIR" "$PAIRS" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
def col(side, f):
    return [f(json.load(open(f"{d}/{side}-{i}.json"))) for i in range(1, n + 1)]
rate = lambda r: r['committed_per_s']
p99 = lambda r: r['latency_us']['standby_commit']['p99']
cpu = lambda r: r.get('cpu_ns_per_change', 0) or float('nan')
for name, f in (("committed/s", rate), ("standby_commit p99 us", p99), ("cpu ns per change", cpu)):
    a, b = statistics.median(col("A", f)), statistics.median(col("B", f))
    # Each pair's own ratio too: how many pairs agree says more than the medians on a
    # machine whose speed drifts between pairs.
    pairs = " ".join(f"{y / x:.3f}" for x, y in zip(col("A", f), col("B", f)))
    print(f"median {name}: A {a:,.0f}  B {b:,.0f}  B/A {b / a:.3f}  (pairs B/A: {pairs})")
PY

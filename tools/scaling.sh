#!/usr/bin/env bash
# Scaling of the data path with the worker count: `churn --rate max` with 1, 2, 4, 8 and 16
# workers (those up to the core count; WORKERS="1 2 4" to choose), RUNS runs each (default 3),
# and a table of the median committed/s, standby_commit p99 and CPU per change, with the
# machine's core count beside every figure. Channels scale with the workers (64 per 2 workers,
# at least 64) so each worker keeps a full share. JSON reports and logs go to $OUT_DIR.
# Usage: tools/scaling.sh [runs=3] [duration=10]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DUR=${2:-10}
OUT_DIR=${OUT_DIR:-/tmp/statesync-scaling}
BIN=${BIN:-target/release/statesync}
CORES=$(nproc)
[ -x "$BIN" ] || cargo build --release
mkdir -p "$OUT_DIR"
WORKERS=${WORKERS:-$(for w in 1 2 4 8 16; do if [ "$w" -le "$CORES" ]; then echo "$w"; fi; done)}
echo "machine: $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
for w in $WORKERS; do
  ch=$(( w * 32 < 64 ? 64 : w * 32 ))
  for i in $(seq 1 "$RUNS"); do
    f="$OUT_DIR/w$w-$i"
    "$BIN" churn --duration "$DUR" --rate max --workers "$w" --channels "$ch" --json "$f.json" > "$f.log" 2>&1 \
      || { echo "workers $w run $i failed: see $f.log"; exit 1; }
    echo "workers $w run $i: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(int(r['committed_per_s']), 'committed/s, p99', r['latency_us']['standby_commit']['p99'], 'us')" "$f.json")"
  done
done
python3 - "$OUT_DIR" "$RUNS" "$CORES" $WORKERS <<'PY'
import json, statistics, sys
d, runs, cores, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
print(f"\n| cores | workers | committed/s (median of {runs}) | per worker | standby_commit p99 us | cpu ns/change | digests equal, 0 lost |")
print("|---|---|---|---|---|---|---|")
for w in workers:
    rs = [json.load(open(f"{d}/w{w}-{i}.json")) for i in range(1, runs + 1)]
    rate = statistics.median(r["committed_per_s"] for r in rs)
    p99 = statistics.median(r["latency_us"]["standby_commit"]["p99"] for r in rs)
    cpu = statistics.median(r.get("cpu_ns_per_change", 0) for r in rs)
    ok = all(r["digests_equal"] and r["lost_committed"] == 0 and r["ok"] for r in rs)
    print(f"| {cores} | {w} | {rate:,.0f} | {rate / int(w):,.0f} | {p99:,} | {cpu:,.0f} | {'yes' if ok else 'NO'} |")
PY

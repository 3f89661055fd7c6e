#!/usr/bin/env bash
# Median of N churn runs per I/O backend at --rate max, then N runs at half the uring median
# (latency; the median p99 is printed), one at a quarter, then one run with the transport fault
# layer on. Writes JSON reports (and the hdrhistogram logs of the first half-rate run) to
# $OUT_DIR. LAT_ARGS replaces the churn arguments of the half and quarter runs (the
# latency profile, e.g. LAT_ARGS="--io mmsg --shards-per-worker 2"; default --io uring); MAX_ARGS
# adds arguments to the max runs. Before each half and quarter run, `statesync hiccups` measures
# for HICCUPS_S seconds (default 5; 0: not at all) how much the machine itself stalls the cores,
# and the floor that sets under the run's tail is printed beside it.
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
    # shellcheck disable=SC2086
    "$BIN" churn --duration "$DUR" --rate max --io "$io" ${MAX_ARGS:-} --json "$OUT_DIR/max-$io-$i.json" > "$OUT_DIR/max-$io-$i.log"
    echo "$io run $i: $(rate_of "$OUT_DIR/max-$io-$i.json") committed/s"
  done
  m=$(for i in $(seq 1 "$RUNS"); do rate_of "$OUT_DIR/max-$io-$i.json"; done | median)
  echo "$io median: $m committed/s"
  echo "$m" > "$OUT_DIR/median-$io"
done
HICCUPS_S=${HICCUPS_S:-5}
# Runs `statesync hiccups` and prints its worst core: stalls per second and the floors.
hiccups() {
  [ "$HICCUPS_S" = 0 ] && return 0
  "$BIN" hiccups --duration "$HICCUPS_S" --json "$OUT_DIR/hiccups-$1.json" > "$OUT_DIR/hiccups-$1.log"
  python3 - "$OUT_DIR/hiccups-$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
worst = lambda i: max(c["floors"][i]["share_over"] for c in r["cores"])
stalls = max(c["stalls"] / (c["elapsed_ns"] / 1e9) for c in r["cores"])
print(f"  platform before it (hiccups {r['duration_s']:g} s, worst core): stalls >= 0.5 ms {stalls:.1f}/s;"
      f" floor {100 * worst(0):.2f} % over 1 ms at half load, {100 * worst(1):.2f} % over 0.4 ms at a quarter")
PY
}
p99_of() { python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['latency_us']['standby_commit']; print(l['p50'], l['p99'], l['p999'], l['max'])" "$1"; }
half=$(( $(cat "$OUT_DIR/median-uring") / 2 ))
for i in $(seq 1 "$RUNS"); do
  hdr=(); [ "$i" = 1 ] && hdr=(--hdr-log "$OUT_DIR/hdr")
  floor=$(hiccups "half-$i")
  # shellcheck disable=SC2086
  "$BIN" churn --duration "$DUR" --rate "$half" ${LAT_ARGS:---io uring} --json "$OUT_DIR/half-$i.json" "${hdr[@]}" > "$OUT_DIR/half-$i.log"
  echo "half rate ($half/s) run $i: standby_commit p50 p99 p999 max (us): $(p99_of "$OUT_DIR/half-$i.json")"
  [ -z "$floor" ] || echo "$floor"
done
m=$(for i in $(seq 1 "$RUNS"); do p99_of "$OUT_DIR/half-$i.json" | cut -d' ' -f2; done | median)
echo "half rate median standby_commit p99: $m us"
quarter=$(( half / 2 ))
floor=$(hiccups quarter)
# shellcheck disable=SC2086
"$BIN" churn --duration "$DUR" --rate "$quarter" ${LAT_ARGS:---io uring} --json "$OUT_DIR/quarter.json" > "$OUT_DIR/quarter.log"
echo "quarter rate ($quarter/s): standby_commit p50 p99 p999 max (us): $(p99_of "$OUT_DIR/quarter.json")"
[ -z "$floor" ] || echo "$floor"
"$BIN" churn --duration "$DUR" --rate max --loss 0.01 --dup 0.005 --reorder 0.01 --json "$OUT_DIR/faults.json" > "$OUT_DIR/faults.log"
echo "faults (1% loss, 0.5% dup, 1% reorder):"; grep -E "committed |digests" "$OUT_DIR/faults.log"
# One line per run, for the record.
python3 tools/churn-summary.py "$OUT_DIR" | tee "$OUT_DIR/summary.txt"

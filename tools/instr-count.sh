#!/usr/bin/env bash
# Instructions per change of the in-process fabric (primary, standby and two clients over
# frames in memory, 1 Mi keys, 64 channels), counted by cachegrind: exact and repeatable, where
# this shared machine's timings of the same build vary by a fifth from run to run. Use it to
# compare the CPU work of builds (a change that saves work shows here whatever the host does);
# timings (`tools/ab.sh`, the criterion bench) still decide whether the saving pays, since
# memory stalls do not count here.
#
# For each bench binary given (`target/release/deps/core-*`, built by
# `cargo bench --bench core --no-run`), runs its churn bench's fixed-step mode
# (STATESYNC_BENCH_STEPS) twice under cachegrind, with 0 and with STEPS steps of 4,096 changes,
# and divides the difference: the prefill and start-up cancel out. Prints the total and the
# functions that take the most.
# Usage: tools/instr-count.sh BENCH_BIN [BENCH_BIN...]   (env: STEPS=100, TOP=15, OUT_DIR)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BENCH_BIN [BENCH_BIN...]" >&2; exit 2; }
command -v valgrind > /dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
STEPS=${STEPS:-100}; TOP=${TOP:-15}; OUT_DIR=${OUT_DIR:-/tmp/instr-count}
mkdir -p "$OUT_DIR"
n=0
for bin in "$@"; do
  n=$((n + 1))
  for steps in 0 "$STEPS"; do
    STATESYNC_BENCH_STEPS=$steps valgrind --tool=cachegrind --cache-sim=no \
      --cachegrind-out-file="$OUT_DIR/$n-$steps.out" "$bin" --bench churn_set_1Mi \
      > "$OUT_DIR/$n-$steps.log" 2>&1 || { echo "$bin failed: see $OUT_DIR/$n-$steps.log" >&2; exit 1; }
  done
  cg_diff "$OUT_DIR/$n-0.out" "$OUT_DIR/$n-$STEPS.out" > "$OUT_DIR/$n-diff.out" 2> /dev/null
  echo "== $bin"
  python3 - "$OUT_DIR/$n-diff.out" $((STEPS * 4096)) "$TOP" <<'PY'
import collections, sys
# Sum the instruction counts of each function over all its source files (inlined code is
# listed under the file it came from).
per_fn, fn = collections.Counter(), None
for line in open(sys.argv[1]):
    if line.startswith("fn="):
        fn = line[3:].strip()
    elif fn and (line[:1].isdigit() or line[:1] == "-"):
        parts = line.split()
        if len(parts) >= 2:
            per_fn[fn] += int(parts[1])
changes, top = int(sys.argv[2]), int(sys.argv[3])
total = sum(per_fn.values())
print(f"instructions per change: {total / changes:.1f}")
for f, v in per_fn.most_common(top):
    print(f"  {v / changes:8.1f} {100 * v / total:5.1f}%  {f[:100]}")
PY
done

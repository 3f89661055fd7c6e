#!/usr/bin/env bash
# Measures one knob of the tuning kit with `statesync churn`: RUNS back-to-back pairs, one run
# without the knob and one with it (the order alternates from pair to pair, so a drift of the
# shared machine's load does not favour either side), then the median of each side and their
# ratio, for committed/s and the standby_commit p99. Leaves the machine as it found it
# (tuning/revert.sh, and the offloads restored) even when interrupted.
#
# Usage: tuning/measure.sh KNOB [RUNS=3] [DURATION_S=10]
#   KNOB: buffers | backlog | busy-poll | damon | page-reporting | all  (tuning/apply.sh KNOB
#         against the settings found; for damon and page-reporting, give a latency rate:
#         CHURN_ARGS="--rate 3000000")
#         gso-off  (the UDP segmentation offloads of lo switched off against on, the default:
#                   what keeping the kit's `offload` knob on is worth)
# Env:  BIN (default target/release/statesync), OUT_DIR (default /tmp/statesync-tuning),
#       CHURN_ARGS (extra churn arguments, default none: 64 channels, 1 Mi keys, rate max)
set -euo pipefail
cd "$(dirname "$0")/.."
KNOB=${1:?usage: tuning/measure.sh KNOB [RUNS] [DURATION_S]}
RUNS=${2:-3}
DUR=${3:-10}
BIN=${BIN:-target/release/statesync}
OUT_DIR=${OUT_DIR:-/tmp/statesync-tuning}/$KNOB
mkdir -p "$OUT_DIR"
[[ -x $BIN ]] || { echo "measure: no $BIN (nice -n 10 cargo build --release)" >&2; exit 1; }
[[ -f ${STATESYNC_TUNING_STATE:-/run/statesync-tuning.saved} ]] && {
    echo "measure: the kit is applied now; run tuning/revert.sh first" >&2
    exit 1
}

LO_FEATS=(generic-segmentation-offload tx-udp-segmentation)
lo_saved=()
if command -v ethtool >/dev/null; then
    for f in "${LO_FEATS[@]}"; do
        lo_saved+=("$f" "$(ethtool -k lo | grep -E "^[[:space:]]*$f:" | awk '{print $2}')")
    done
elif [[ $KNOB == gso-off ]]; then
    echo "measure: gso-off needs ethtool (apt-get install ethtool)" >&2
    exit 1
fi
restore() {
    tuning/revert.sh >/dev/null
    [[ ${#lo_saved[@]} == 0 ]] || ethtool -K lo "${lo_saved[@]}" 2>/dev/null || true
}
trap restore EXIT

set_knob() { # on|off
    restore
    case $KNOB in
        gso-off) [[ $1 == on ]] && ethtool -K lo generic-segmentation-offload off tx-udp-segmentation off ;;
        all) [[ $1 == on ]] && tuning/apply.sh >/dev/null ;;
        *) [[ $1 == on ]] && tuning/apply.sh "$KNOB" >/dev/null ;;
    esac
    return 0
}
read_json() { # file -> "committed_per_s p99_us"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(int(d['committed_per_s']), d['latency_us']['standby_commit']['p99'])" "$1"
}
# Kernel drop counters (whole host, this network namespace): input-queue drops summed over the
# CPUs (/proc/net/softnet_stat column 2, the netdev_max_backlog limit), and UDP receive and
# send buffer errors. They say whether a knob's mechanism is in play at all.
drops() {
    local q=0 d
    while read -r _ d _; do q=$((q + 16#$d)); done </proc/net/softnet_stat
    awk -v q="$q" '/^Udp:/ {if (!h) {for (i = 1; i <= NF; i++) c[$i] = i; h = 1}
        else print q, $c["RcvbufErrors"], $c["SndbufErrors"]}' /proc/net/snmp
}
run() { # side pair
    set_knob "$1"
    local before after
    before=$(drops)
    # shellcheck disable=SC2086
    "$BIN" churn --duration "$DUR" ${CHURN_ARGS:-} --json "$OUT_DIR/$1-$2.json" >"$OUT_DIR/$1-$2.log" 2>&1 \
        || echo "measure: churn failed ($OUT_DIR/$1-$2.log)" >&2
    after=$(drops)
    read -r q0 r0 s0 <<<"$before"
    read -r q1 r1 s1 <<<"$after"
    echo "measure: $KNOB $1 pair $2: $(read_json "$OUT_DIR/$1-$2.json") (committed/s, standby_commit p99 µs);" \
        "kernel drops: backlog $((q1 - q0)), UDP RcvbufErrors $((r1 - r0)), SndbufErrors $((s1 - s0))"
}
for i in $(seq 1 "$RUNS"); do
    if ((i % 2)); then run off "$i"; run on "$i"; else run on "$i"; run off "$i"; fi
done
restore
trap - EXIT
python3 - "$OUT_DIR" "$RUNS" "$KNOB" <<'EOF'
import json, statistics, sys
d, runs, knob = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def side(s):
    js = [json.load(open(f"{d}/{s}-{i}.json")) for i in range(1, runs + 1)]
    return ([j["committed_per_s"] for j in js], [j["latency_us"]["standby_commit"]["p99"] for j in js])
(r0, p0), (r1, p1) = side("off"), side("on")
pr = [a / b for a, b in zip(r1, r0)]
pp = [a / b for a, b in zip(p1, p0)]
print(f"measure: {knob}: committed/s median {statistics.median(r0):,.0f} without, "
      f"{statistics.median(r1):,.0f} with: x{statistics.median(r1) / statistics.median(r0):.2f} "
      f"(pairs x{min(pr):.2f}..x{max(pr):.2f}); standby_commit p99 median "
      f"{statistics.median(p0):,.0f} without, {statistics.median(p1):,.0f} with µs: "
      f"x{statistics.median(p1) / statistics.median(p0):.2f} (pairs x{min(pp):.2f}..x{max(pp):.2f})")
EOF

#!/usr/bin/env bash
# Applies the statesync host profile (tuning/sysctl.conf, plus UDP segmentation offloads through
# ethtool), saving every value it changes first so that tuning/revert.sh restores exactly those.
#
# Usage: tuning/apply.sh [--dry-run] [KNOB...]
#   KNOB: buffers | backlog | busy-poll (groups of tuning/sysctl.conf) | offload (ethtool) |
#         damon (pause every running DAMON monitor, kdamond) |
#         page-reporting (hold freed memory 60 s before the guest reports it to the host);
#         default: all of them.
# Env:  STATESYNC_TUNING_STATE  where the saved values go (default /run/statesync-tuning.saved;
#                               /run is cleared at boot, as the kernel's settings are)
#       STATESYNC_TUNING_IFACES interfaces for `offload` (default: lo and the default route's)
#
# Idempotent: a setting already saved keeps its first saved value (the one from before any
# apply), so applying twice, or knob by knob, still reverts to the original state.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROFILE=$HERE/sysctl.conf
STATE=${STATESYNC_TUNING_STATE:-/run/statesync-tuning.saved}
DRY=0
KNOBS=()
for a in "$@"; do
    case $a in
        --dry-run) DRY=1 ;;
        buffers | backlog | busy-poll | offload | damon | page-reporting) KNOBS+=("$a") ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "apply: unknown knob '$a' (buffers, backlog, busy-poll, offload, damon, page-reporting)" >&2; exit 2 ;;
    esac
done
[[ ${#KNOBS[@]} -gt 0 ]] || KNOBS=(buffers backlog busy-poll offload damon page-reporting)
if [[ $DRY == 0 && $(id -u) != 0 ]]; then
    echo "apply: needs root (sysctl -w, ethtool -K, DAMON's and page reporting's sysfs); try --dry-run" >&2
    exit 1
fi
[[ $DRY == 1 ]] || touch "$STATE"

saved() { [[ -f $STATE ]] && grep -qxF -- "$1" <(cut -d' ' -f1-"$2" "$STATE"); }
wants() { local k; for k in "${KNOBS[@]}"; do [[ $k == "$1" ]] && return 0; done; return 1; }

# Settings of the chosen groups of sysctl.conf: "key value" per line.
group=""
while IFS= read -r line; do
    if [[ $line =~ ^#\ \[([a-z-]+)\] ]]; then
        group=${BASH_REMATCH[1]}
        continue
    fi
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    wants "$group" || continue
    key=$(echo "${line%%=*}" | xargs)
    want=$(echo "${line#*=}" | xargs)
    if ! now=$(sysctl -n "$key" 2>/dev/null); then
        echo "apply: $key: not in this kernel, skipped"
        continue
    fi
    now=$(echo "$now" | xargs)
    if [[ $now == "$want" ]]; then
        echo "apply: $key = $want (already)"
    elif [[ $DRY == 1 ]]; then
        echo "apply: $key: $now -> $want (dry run)"
        continue
    else
        sysctl -qw "$key=$want"
        echo "apply: $key: $now -> $want"
    fi
    if [[ $DRY == 0 ]] && ! saved "sysctl $key" 2; then
        echo "sysctl $key $now" >>"$STATE"
    fi
done <"$PROFILE"

# UDP segmentation offloads: statesync sends with UDP_SEGMENT (GSO) and receives with UDP_GRO;
# with these on, a batch of frames crosses the stack (and loopback) as one packet.
if wants offload; then
    if ! command -v ethtool >/dev/null; then
        echo "apply: offload: ethtool not installed (apt-get install ethtool), skipped"
    else
        ifaces=${STATESYNC_TUNING_IFACES:-"lo $(ip route show default 2>/dev/null | awk '{print $5; exit}')"}
        for ifc in $ifaces; do
            for feat in generic-segmentation-offload tx-udp-segmentation generic-receive-offload; do
                line=$(ethtool -k "$ifc" 2>/dev/null | grep -E "^[[:space:]]*$feat:" || true)
                if [[ -z $line ]]; then
                    echo "apply: $ifc $feat: not offered, skipped"
                    continue
                fi
                now=$(echo "$line" | awk '{print $2}')
                if [[ $line == *fixed* ]]; then
                    echo "apply: $ifc $feat = $now (fixed by the driver)"
                    continue
                fi
                if [[ $now == on ]]; then
                    echo "apply: $ifc $feat = on (already)"
                elif [[ $DRY == 1 ]]; then
                    echo "apply: $ifc $feat: $now -> on (dry run)"
                    continue
                else
                    ethtool -K "$ifc" "$feat" on
                    echo "apply: $ifc $feat: $now -> on"
                fi
                if [[ $DRY == 0 ]] && ! saved "ethtool $ifc $feat" 3; then
                    echo "ethtool $ifc $feat $now" >>"$STATE"
                fi
            done
        done
    fi
fi
# DAMON: a kdamond samples page access every sample interval (500 ms on the VM this was measured
# on) in one pass over its regions, 2-4 ms of kernel work that nothing preempts on a kernel built
# with PREEMPT_NONE. Whichever worker shares its core stalls that long, and the changes due
# meanwhile carry the stall: at half load that alone took standby_commit p99 from about 0.5 ms
# to 3 ms (docs/measurements/data-path-changes.md, "Session 19"). Pausing the monitor stops the
# host's DAMON-based reclaim until revert.sh turns it back on.
if wants damon; then
    found=0
    for kd in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
        [[ -f $kd/state ]] || continue
        found=1
        now=$(cat "$kd/state")
        if [[ $now == off ]]; then
            echo "apply: $kd/state = off (already)"
        elif [[ $DRY == 1 ]]; then
            echo "apply: $kd/state: $now -> off (dry run)"
            continue
        else
            echo off >"$kd/state"
            echo "apply: $kd/state: $now -> off"
        fi
        if [[ $DRY == 0 ]] && ! saved "file $kd/state" 2; then
            echo "file $kd/state $now" >>"$STATE"
        fi
    done
    [[ $found == 1 ]] || echo "apply: damon: no DAMON monitor configured, skipped"
fi
# Free page reporting: a virtual machine's guest tells the host which free memory it may take
# back (virtio-balloon), and each report stalls both vCPUs while the host unmaps it: on the VM
# this was measured on (reporting at once, `min_free_ms` 0), the ~700 MiB a churn run frees at
# exit went back in 128 MiB reports over the next ~8 s, each losing 10-140 ms of both cores,
# i.e. inside the next run of a series (docs/measurements/data-path-changes.md, "Session 20").
# Holding freed memory 60 s first lets the next run reuse it unreported. Only kernels whose
# page_reporting has a `min_free_ms` parameter (mainline has none) can be told to wait.
if wants page-reporting; then
    f=/sys/module/page_reporting/parameters/min_free_ms
    if [[ ! -f $f ]]; then
        echo "apply: page-reporting: this kernel has no $f, skipped"
    else
        now=$(cat "$f")
        if ((now >= 60000)); then
            echo "apply: $f = $now (already 60 s or more)"
        elif [[ $DRY == 1 ]]; then
            echo "apply: $f: $now -> 60000 (dry run)"
        else
            saved "file $f" 2 || echo "file $f $now" >>"$STATE"
            echo 60000 >"$f"
            echo "apply: $f: $now -> 60000"
        fi
    fi
fi
[[ $DRY == 1 ]] || echo "apply: previous values saved in $STATE (tuning/revert.sh restores them)"

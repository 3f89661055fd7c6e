#!/usr/bin/env bash
# Restores every setting tuning/apply.sh changed to the value it had before, from the file apply
# saved them in, then removes that file. Without the file there is nothing to undo (idempotent).
#
# Usage: tuning/revert.sh
# Env:   STATESYNC_TUNING_STATE (default /run/statesync-tuning.saved), as for apply.sh
set -euo pipefail
STATE=${STATESYNC_TUNING_STATE:-/run/statesync-tuning.saved}
if [[ ! -f $STATE ]]; then
    echo "revert: nothing to revert ($STATE does not exist)"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "revert: needs root" >&2
    exit 1
fi
# Newest first, though each setting is saved only once.
# Lines: "sysctl KEY VALUE...", "ethtool IFACE FEATURE on|off" or "file SYSFS_PATH VALUE"
# (and "damon KDAMOND_DIR on|off", as kits before the `file` line saved a DAMON monitor).
tac "$STATE" | while read -r what a rest; do
    case $what in
        sysctl)
            now=$(sysctl -n "$a" | xargs)
            sysctl -qw "$a=$rest"
            echo "revert: $a: $now -> $rest"
            ;;
        ethtool)
            read -r feat val <<<"$rest"
            now=$(ethtool -k "$a" | grep -E "^[[:space:]]*$feat:" | awk '{print $2}')
            ethtool -K "$a" "$feat" "$val"
            echo "revert: $a $feat: $now -> $val"
            ;;
        damon)
            a=$a/state
            ;&
        file)
            now=$(cat "$a")
            echo "$rest" >"$a"
            echo "revert: $a: $now -> $rest"
            ;;
        *) echo "revert: unknown line in $STATE: $what $a $rest" >&2 ;;
    esac
done
rm -f "$STATE"
echo "revert: done; $STATE removed"

#!/usr/bin/env python3
"""One line per `statesync churn --json` report in a directory: rate, loss and digest check,
wire cost, latency, turn length, run-queue wait, retransmissions and the other tasks that ran.

Usage: tools/churn-summary.py DIR
"""
import glob
import json
import os
import sys


def line(path):
    j = json.load(open(path))
    if "latency_us" not in j:
        return None  # not a churn report (e.g. `statesync hiccups --json`)
    lat = j["latency_us"]
    c = lat["standby_commit"]
    other = ", ".join(
        f"{t['comm']} {t['cpu_ms']:.0f} ms/{t['slices']}" for t in j.get("other_tasks", [])[:2]
    )
    return (
        f"{os.path.basename(path):<18} {j['committed_per_s']:>9.0f}/s lost {j['lost_committed']}"
        f" digests_equal {j['digests_equal']}"
        f" dgram/s {j['datagrams_per_s']:>6.0f} B/chg {j['wire_bytes_per_change']:.1f}"
        f" apply p50/p99 {lat['client_apply']['p50']}/{lat['client_apply']['p99']}"
        f" commit p50 {c['p50']} p99 {c['p99']} p999 {c['p999']} max {c['max']}"
        f" turn p99 {j.get('busy_turn_us', {}).get('p99', '?')}"
        f" runq {j.get('worker_run_delay_ms', 0):.0f}ms retx {j.get('retransmits', 0)}"
        f" other tasks: {other}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
        text = line(path)
        if text:
            print(text)

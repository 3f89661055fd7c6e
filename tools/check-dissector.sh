#!/usr/bin/env bash
# Checks the Wireshark dissector (tools/wireshark/statesync.lua) against a REAL capture: runs a
# short `statesync churn` (authenticated, with loss so that NACKs appear), a shorter unauthenticated
# one, and one `statesync drill` round (SUBMIT, failover query/replay, state transfer), captures
# their loopback traffic with dumpcap, and decodes it with tshark. It fails when
#   - any frame carries an expert error or is malformed, or a Lua error shows up;
#   - any UDP datagram of the capture is not recognised as statesync (inside its own network
#     namespace the capture holds nothing else; without one, other programs' datagrams are
#     only counted);
#   - any message kind (1..19) or frame type (data, opener, hello, unauthenticated) never appears
#     (UPDATE excepted: the primary sends ordinary updates as UPDATE_RUN, and an UPDATE only for
#     a PREAPPLIED op or one with more than 255 public or private entries, which a round may not
#     need; tests/wireshark.rs covers it on built frames);
#   - any field of any kind is missing: every header and trailer field once per frame, and each
#     body field exactly once per message of the kinds that carry it (UPDATE_RUN ops: once per
#     op; entries: once per entry, the value length once per entry that does not delete).
# tests/wireshark.rs runs this script and then compares every decoded value with the Rust decoder.
#
# Usage: tools/check-dissector.sh            (needs target/release/statesync, tshark, root)
#        tools/check-dissector.sh --decode FILE.pcap
#            only decodes FILE.pcap (no capture, no check) into $CHECK_DISSECTOR_OUT/fields.tsv,
#            with the same columns: tests/wireshark.rs runs it on frames it builds itself.
# Env:   STATESYNC_BIN       binary to run (default target/release/statesync)
#        CHECK_DISSECTOR_OUT directory for cap.pcap, fields.tsv, samples.txt (default: mktemp)
#        CHECK_DISSECTOR_DRILL drill variant (default kill-client-in-replay)
# Exit:  0 pass, 1 fail, 77 skipped (no tshark/dumpcap, or no permission to capture).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LUA=$ROOT/tools/wireshark/statesync.lua
BIN=${STATESYNC_BIN:-$ROOT/target/release/statesync}
SKIP=77
skip() { echo "check-dissector: SKIP: $*"; exit $SKIP; }
fail() { echo "check-dissector: FAIL: $*" >&2; exit 1; }

command -v tshark >/dev/null || skip "tshark not installed (Debian: apt-get install tshark)"

if [[ -z ${CHECK_DISSECTOR_OUT:-} ]]; then
    CHECK_DISSECTOR_OUT=$(mktemp -d /tmp/statesync-dissector.XXXXXX)
fi
export CHECK_DISSECTOR_OUT STATESYNC_BIN=$BIN
OUT=$CHECK_DISSECTOR_OUT
mkdir -p "$OUT"

FIELDS=(frame.number udp.length _ws.expert.severity _ws.malformed _ws.lua.error
    statesync.malformed statesync.unknown_kind statesync.frame_type
    statesync.magic statesync.version statesync.flags statesync.flags.auth statesync.msg_count
    statesync.sender statesync.payload_len statesync.epoch statesync.packet_seq
    statesync.auth.sender_boot statesync.auth.receiver_boot statesync.auth.tag
    statesync.msg.kind statesync.msg.flags statesync.msg.body_len
    statesync.update.channel statesync.update.public_count statesync.update.private_count
    statesync.update.op statesync.update.cookie statesync.update.preapplied
    statesync.run.channel statesync.run.first_op statesync.run.op_count
    statesync.runop.op statesync.runop.cookie statesync.runop.public_count
    statesync.runop.private_count
    statesync.entry.private statesync.entry.head statesync.entry.section statesync.entry.delete
    statesync.entry.wide_key statesync.entry.key statesync.entry.value_len statesync.entry.value
    statesync.chanop.channel statesync.chanop.generation statesync.chanop.op
    statesync.commit.channel statesync.commit.reserved statesync.commit.applied statesync.commit.held
    statesync.nack.channel statesync.nack.generation statesync.nack.from statesync.nack.to
    statesync.hb.role statesync.hb.flags statesync.hb.flags.primary_lost
    statesync.hb.flags.needs_transfer statesync.hb.flags.joined statesync.hb.flags.switchover
    statesync.hb.sync_version statesync.hb.sync_mask statesync.hb.boot_or_target statesync.hb.vote
    statesync.hb.view_epoch
    statesync.lareply.channel statesync.lareply.flags statesync.lareply.flags.unknown
    statesync.lareply.last_applied statesync.lareply.cookie_above statesync.lareply.data_epoch
    statesync.begin.channel statesync.begin.stream statesync.begin.sections
    statesync.begin.base_op statesync.begin.acked_op
    statesync.bentry.channel statesync.bentry.stream statesync.bentry.index statesync.bentry.section
    statesync.bentry.flags statesync.bentry.flags.private statesync.bentry.value_len
    statesync.bentry.key statesync.bentry.value
    statesync.end.channel statesync.end.stream statesync.end.total statesync.end.reserved
    statesync.end.base_op
    statesync.bulkack.channel statesync.bulkack.stream statesync.bulkack.next_index
    statesync.bulkack.done
    statesync.history.channel statesync.history.stream statesync.history.index
    statesync.history.reserved statesync.history.epoch statesync.history.start_op)

# decode PCAP: one row per UDP datagram (statesync or not) into $OUT/fields.tsv.
decode() {
    local EARGS=() f
    for f in "${FIELDS[@]}"; do EARGS+=(-e "$f"); done
    if ! tshark -X "lua_script:$LUA" -r "$1" -Y udp -T fields -E header=y -E occurrence=a \
        -E separator=/t "${EARGS[@]}" >"$OUT/fields.tsv" 2>"$OUT/tshark.err"; then
        fail "tshark -T fields failed (a field the dissector does not define?): $(head -5 "$OUT/tshark.err")"
    fi
    # A Lua error inside the dissector shows as _ws.lua.error (an expert error); one while the
    # script loads only on stderr.
    if grep -qi "lua" "$OUT/tshark.err"; then
        fail "tshark reported Lua errors: $(head -5 "$OUT/tshark.err")"
    fi
}

if [[ ${1:-} == --decode ]]; then
    [[ -r ${2:-} ]] || fail "--decode needs a readable pcap file"
    decode "$2"
    exit 0
fi

command -v dumpcap >/dev/null || skip "dumpcap not installed (Debian: apt-get install tshark)"
[[ -x $BIN ]] || fail "no binary at $BIN (cargo build --release, or set STATESYNC_BIN)"

# A network namespace of our own, so that the capture holds our traffic only (the machine may
# run other statesync processes on its loopback). Without one, capture the host's loopback.
if [[ -z ${CHECK_DISSECTOR_NETNS:-} ]]; then
    if unshare --net true 2>/dev/null; then
        CHECK_DISSECTOR_NETNS=own exec unshare --net "$ROOT/tools/check-dissector.sh" "$@"
    fi
    CHECK_DISSECTOR_NETNS=host
fi
if [[ $CHECK_DISSECTOR_NETNS == own ]]; then
    ip link set lo up 2>/dev/null || true
    echo "check-dissector: capturing in a network namespace of its own"
else
    echo "check-dissector: no network namespace (not root?): capturing the host's loopback"
fi

rm -f "$OUT/cap.pcap"
# -P: classic pcap (tests/wireshark.rs reads it); -f udp: nothing else is ours.
dumpcap -i lo -f udp -P -w "$OUT/cap.pcap" >"$OUT/dumpcap.log" 2>&1 &
DUMPCAP=$!
trap 'kill $DUMPCAP 2>/dev/null || true' EXIT
for _ in $(seq 400); do # up to 20 s: the machine may be busy
    grep -q "Capturing on" "$OUT/dumpcap.log" && break
    kill -0 $DUMPCAP 2>/dev/null || skip "dumpcap cannot capture on lo: $(tr '\n' ' ' <"$OUT/dumpcap.log")"
    sleep 0.05
done
grep -q "Capturing on" "$OUT/dumpcap.log" || fail "dumpcap did not start: $(cat "$OUT/dumpcap.log")"

run() { # name, command...: runs it, its output into $OUT/name.log
    local name=$1
    shift
    echo "check-dissector: $name: $*"
    if ! timeout 90 "$@" >"$OUT/$name.log" 2>&1; then
        tail -20 "$OUT/$name.log" >&2
        fail "$name failed (log: $OUT/$name.log)"
    fi
}
# Authenticated (the default): openers and hellos at the start, then UPDATE, ACK, FWD_ACK,
# COMMIT, HEARTBEAT; 2 % loss makes receivers NACK the gaps.
run churn "$BIN" churn --duration 0.5 --rate 2000 --keys 4096 --channels 4 --workers 1 \
    --clients 2 --loss 0.02 --no-prefill
# Unauthenticated frames (flag clear, zero trailer).
run churn-insecure "$BIN" churn --insecure --duration 0.3 --rate 1000 --keys 1024 --channels 2 \
    --workers 1 --clients 1 --no-prefill
# Daemons: SUBMIT from the load client; the kill of the primary brings LA_QUERY and LA_REPLY,
# and (kill-client-in-replay: a client restarts empty during the failover) REPLAY_*; the rejoin
# of the killed unit a state transfer (XFER_*, XFER_HISTORY). Only its traffic matters here: a
# round that fails (the drill's own verdict) is run again, up to 3 times, and the kind check
# below says whether what reached the wire is enough.
DRILL_VARIANT=${CHECK_DISSECTOR_DRILL:-kill-client-in-replay}
for try in 1 2 3; do
    echo "check-dissector: drill (try $try): $BIN drill --rounds 1 --variant $DRILL_VARIANT …"
    if timeout 90 "$BIN" drill --rounds 1 --variant "$DRILL_VARIANT" --clients 2 \
        --channels-per-client 2 --rate 2000 >"$OUT/drill.log" 2>&1; then
        break
    fi
    echo "check-dissector: drill round failed: $(grep -m1 'round  1' "$OUT/drill.log" || tail -1 "$OUT/drill.log")"
done

sleep 0.3
kill -INT $DUMPCAP
wait $DUMPCAP || true
trap - EXIT
[[ -s $OUT/cap.pcap ]] || fail "empty capture"

# One pass over every UDP datagram: a row each, statesync or not.
decode "$OUT/cap.pcap"

# Structure of every kind, field by field (python3: reads fields.tsv).
FIELDS_OK=1
CHECK_DISSECTOR_NETNS=$CHECK_DISSECTOR_NETNS python3 - "$OUT" <<'EOF' || FIELDS_OK=0
import csv, os, sys
out = sys.argv[1]
KINDS = ["UPDATE", "ACK", "FWD_ACK", "COMMIT", "NACK", "HEARTBEAT", "LA_QUERY", "LA_REPLY",
         "REPLAY_BEGIN", "REPLAY_ENTRY", "REPLAY_END", "REPLAY_ACK", "XFER_BEGIN", "XFER_ENTRY",
         "XFER_END", "XFER_ACK", "XFER_HISTORY", "SUBMIT", "UPDATE_RUN"]
# Kinds a round may legitimately not send: UPDATE only carries PREAPPLIED ops (a transfer that
# overlapped new ops) and ops with more than 255 entries of a kind; ordinary updates travel as
# UPDATE_RUN.
OPTIONAL = {1}
# Body field groups and the kinds that carry them (one occurrence per message).
GROUPS = {
    "update": [1, 18], "chanop": [2, 3, 7], "commit": [4], "nack": [5], "hb": [6],
    "lareply": [8], "begin": [9, 13], "bentry": [10, 14], "end": [11, 15],
    "bulkack": [12, 16], "history": [17], "run": [19],
}
PER_FRAME = ["statesync.frame_type", "statesync.magic", "statesync.version", "statesync.flags",
             "statesync.flags.auth", "statesync.msg_count", "statesync.sender",
             "statesync.payload_len", "statesync.epoch", "statesync.packet_seq",
             "statesync.auth.sender_boot", "statesync.auth.receiver_boot", "statesync.auth.tag"]
rows = list(csv.DictReader(open(f"{out}/fields.tsv"), delimiter="\t"))
vals = lambda r, f: [] if r.get(f, "") == "" else r[f].split(",")
problems, missing, errors, strays = [], {}, [], []
msgs = {k: 0 for k in range(1, 20)}
first, ftypes = {}, {}
frames = gso = 0
def need(r, field, n, why):
    got = len(vals(r, field))
    if got != n:
        missing.setdefault(field, []).append(f"frame {r['frame.number']}: {got} of {n} ({why})")
for r in rows:
    num = r["frame.number"]
    if (r["_ws.malformed"] or r["_ws.lua.error"] or r["statesync.malformed"]
            or any(int(s) >= 0x800000 for s in vals(r, "_ws.expert.severity"))):
        errors.append(num)
    nf = len(vals(r, "statesync.frame_type"))
    if nf == 0:
        strays.append(num)
        continue
    frames += nf
    gso += nf > 1
    for t in vals(r, "statesync.frame_type"):
        ftypes.setdefault(t, num)
    for f in PER_FRAME:
        need(r, f, nf, "once per frame")
    kinds = [int(k) for k in vals(r, "statesync.msg.kind")]
    n = len(kinds)
    if sum(int(c) for c in vals(r, "statesync.msg_count")) != n:
        problems.append(f"frame {num}: msg_count {r['statesync.msg_count']}, {n} messages decoded")
    if sum(int(l) + 64 for l in vals(r, "statesync.payload_len")) != int(r["udp.length"]) - 8:
        problems.append(f"frame {num}: payload_len does not fill the datagram")
    for f in ["statesync.msg.kind", "statesync.msg.flags", "statesync.msg.body_len"]:
        need(r, f, n, "once per message")
    for k in kinds:
        msgs[k] += 1
        first.setdefault(k, num)
    for g, ks in GROUPS.items():
        per = sum(1 for k in kinds if k in ks)
        for f in [h for h in r if h.startswith(f"statesync.{g}.") and h != "statesync.bentry.value"]:
            need(r, f, per, f"once per {'/'.join(KINDS[k - 1] for k in ks)}")
    ops = sum(int(n) for n in vals(r, "statesync.run.op_count"))
    for f in [h for h in r if h.startswith("statesync.runop.")]:
        need(r, f, ops, "once per UPDATE_RUN op")
    ents = sum(int(a) + int(b) for a, b in zip(
        vals(r, "statesync.update.public_count") + vals(r, "statesync.runop.public_count"),
        vals(r, "statesync.update.private_count") + vals(r, "statesync.runop.private_count")))
    for f in [h for h in r if h.startswith("statesync.entry.")
              and h not in ("statesync.entry.value", "statesync.entry.value_len")]:
        need(r, f, ents, "once per entry")
    deletes = sum(1 for v in vals(r, "statesync.entry.delete") if v in ("1", "True"))
    need(r, "statesync.entry.value_len", ents - deletes, "once per entry that does not delete")
    need(r, "statesync.entry.value", sum(1 for v in vals(r, "statesync.entry.value_len") if v != "0"),
         "once per entry with a value")
    need(r, "statesync.bentry.value", sum(1 for v in vals(r, "statesync.bentry.value_len") if v != "0"),
         "once per bulk entry with a value")
print(f"check-dissector: {len(rows)} UDP datagrams, {frames} statesync frames "
      f"({gso} datagrams are GSO sends of several frames); frame types: "
      + ", ".join(f"{t} (first #{n})" for t, n in sorted(ftypes.items())))
print(f"check-dissector: {'kind':>14} {'messages':>9}  first datagram")
for k in range(1, 20):
    print(f"check-dissector: {KINDS[k - 1]:>14} {msgs[k]:>9}  {first.get(k, '-')}")
if errors:
    problems.append(f"{len(errors)} datagrams with expert errors or malformed (frames {', '.join(errors[:10])})")
if strays and os.environ.get("CHECK_DISSECTOR_NETNS") == "host":
    # The host's loopback carries other programs' UDP too.
    print(f"check-dissector: {len(strays)} UDP datagrams of other programs (not statesync)")
elif strays:
    problems.append(f"{len(strays)} UDP datagrams not decoded as statesync (frames {', '.join(strays[:10])})")
unseen = [KINDS[k - 1] for k in range(1, 20) if msgs[k] == 0 and k not in OPTIONAL]
if unseen:
    problems.append("message kinds never seen: " + ", ".join(unseen))
for t in ["data", "opener", "hello", "unauthenticated"]:
    if t not in ftypes:
        problems.append(f"frame type never seen: {t}")
for f, where in missing.items():
    problems.append(f"{f} missing or repeated in {len(where)} datagrams, e.g. {where[0]}")
show = sorted(set(first.values()) | set(ftypes.values()) | set(errors[:5]), key=int)
open(f"{out}/show-frames.txt", "w").write(",".join(show))
for p in problems[:20]:
    print("check-dissector: " + p, file=sys.stderr)
if len(problems) > 20:
    print(f"check-dissector: ... and {len(problems) - 20} more problems", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# A full decode (-V) of the first datagram of each kind and frame type (and of the first few
# with errors), for people to read.
# editcap cuts them out first: a display filter would dissect the whole capture again.
editcap -r "$OUT/cap.pcap" "$OUT/samples.pcap" $(tr ',' ' ' <"$OUT/show-frames.txt")
tshark -X "lua_script:$LUA" -r "$OUT/samples.pcap" -V -O statesync >"$OUT/samples.txt" \
    2>>"$OUT/tshark.err"
[[ $FIELDS_OK == 1 ]] || fail "field check failed (see above; data: $OUT/fields.tsv, $OUT/samples.txt)"
echo "check-dissector: PASS ($OUT: cap.pcap, fields.tsv, samples.txt)"

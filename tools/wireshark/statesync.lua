-- Wireshark dissector for the statesync wire protocol, version 2 (docs/PROTOCOL.md).
--
-- Every UDP datagram is one frame (a loopback capture of a UDP GSO send shows several frames
-- back to back in one datagram: each is decoded on its own): a 32-byte header, `msg_count` messages, and a 32-byte
-- authentication trailer (sender boot nonce, receiver boot nonce, 16-byte AES-128-GCM
-- tag). Frames are authenticated, not encrypted, so everything decodes without a key; the tag
-- is shown, not verified (that needs the link secret, which a capture never has).
--
-- Version 2 writes the entries of UPDATE, SUBMIT and UPDATE_RUN compactly, in fixed-width
-- fields: a head byte (section in bits 0-5, delete in bit 6, wide key in bit 7), unless the
-- entry deletes its key a u16 value length, the key (u32, or u64 when wide: only for a key above
-- 2^32 - 1) and the value. An UPDATE_RUN carries consecutive ops of one channel, each its two
-- entry counts (a byte each) and its entries, with no length of its own: each op is shown as a
-- subtree with its op ID and cookie, which are not on the wire but follow from the run's first
-- op and the op's public entries (both marked as generated).
--
-- Use:   wireshark -X lua_script:tools/wireshark/statesync.lua cap.pcap
--        tshark -X lua_script:tools/wireshark/statesync.lua -r cap.pcap -V
-- or copy this file into ~/.local/lib/wireshark/plugins/.
--
-- The dissector is registered on the UDP ports of configs/router-small.toml and of
-- `statesync drill --netns` (preference "statesync.ports"), and as a heuristic on all UDP:
-- `statesync churn` and the loopback `drill` bind ephemeral ports, and the heuristic recognises
-- a frame by its magic, version and length, so their captures decode without "Decode As".
--
-- Every inconsistency the Rust decoder (src/wire/codec.rs) would reject is flagged as an expert
-- error, so `tshark -Y _ws.expert.severity==error` finds frames that a node would drop.
-- tools/check-dissector.sh checks this file against a real capture.

local p = Proto("statesync", "statesync state synchronization")

local HEADER_BYTES = 32
local TRAILER_BYTES = 32
local MSG_HEADER_BYTES = 4
local UPDATE_FIXED_BYTES = 24
local RUN_FIXED_BYTES = 12
local SECTIONS = 64
-- Entry head byte: section in the low six bits, then delete, then wide key (u64, not u32).
local HEAD_DELETE = 0x40
local HEAD_WIDE_KEY = 0x80
local U32_MAX = UInt64(0xffffffff, 0)
-- Largest op ID an UPDATE_RUN may name (codec.rs MAX_RUN_OP = 2^62).
local MAX_RUN_OP = UInt64(0, 0x40000000)
-- "SSYN" as the bytes appear on the wire, read big-endian.
local MAGIC_BE = 0x5353594E

local KINDS = {
    [1] = "UPDATE", [2] = "ACK", [3] = "FWD_ACK", [4] = "COMMIT", [5] = "NACK",
    [6] = "HEARTBEAT", [7] = "LA_QUERY", [8] = "LA_REPLY", [9] = "REPLAY_BEGIN",
    [10] = "REPLAY_ENTRY", [11] = "REPLAY_END", [12] = "REPLAY_ACK", [13] = "XFER_BEGIN",
    [14] = "XFER_ENTRY", [15] = "XFER_END", [16] = "XFER_ACK", [17] = "XFER_HISTORY",
    [18] = "SUBMIT", [19] = "UPDATE_RUN",
}
local ROLES = { [1] = "primary", [2] = "standby", [3] = "client" }

-- Body size of every kind whose body is one fixed struct (codec.rs `fixed`).
local FIXED_BODY = {
    [2] = 16, [3] = 16, [4] = 24, [5] = 24, [6] = 24, [7] = 16, [8] = 32, [9] = 32,
    [11] = 24, [12] = 16, [13] = 32, [15] = 24, [16] = 16, [17] = 32,
}

local f = {
    -- Frame header (PROTOCOL.md §2.1).
    magic = ProtoField.uint32("statesync.magic", "Magic", base.HEX),
    version = ProtoField.uint8("statesync.version", "Version", base.DEC),
    flags = ProtoField.uint8("statesync.flags", "Frame flags", base.HEX),
    flag_auth = ProtoField.bool("statesync.flags.auth", "Authenticated", 8, nil, 0x01),
    msg_count = ProtoField.uint16("statesync.msg_count", "Message count", base.DEC),
    sender = ProtoField.uint32("statesync.sender", "Sender", base.DEC),
    payload_len = ProtoField.uint32("statesync.payload_len", "Payload length", base.DEC),
    epoch = ProtoField.uint64("statesync.epoch", "Epoch", base.DEC),
    packet_seq = ProtoField.uint64("statesync.packet_seq", "Packet sequence", base.DEC),
    frame_type = ProtoField.string("statesync.frame_type", "Frame type"),
    -- Authentication trailer (PROTOCOL.md §2.3).
    trailer = ProtoField.none("statesync.auth", "Authentication trailer"),
    sender_boot = ProtoField.uint64("statesync.auth.sender_boot", "Sender boot nonce", base.DEC),
    receiver_boot = ProtoField.uint64("statesync.auth.receiver_boot", "Receiver boot nonce", base.DEC),
    tag = ProtoField.bytes("statesync.auth.tag", "Tag (AES-128-GCM)"),
    -- Message header (PROTOCOL.md "MsgHeader").
    msg = ProtoField.none("statesync.msg", "Message"),
    kind = ProtoField.uint8("statesync.msg.kind", "Kind", base.DEC, KINDS),
    msg_flags = ProtoField.uint8("statesync.msg.flags", "Message flags", base.HEX),
    body_len = ProtoField.uint16("statesync.msg.body_len", "Body length", base.DEC),
    -- UPDATE / SUBMIT (§4.1); their entries are those of UPDATE_RUN too.
    upd_preapplied = ProtoField.bool("statesync.update.preapplied", "Pre-applied", 8, nil, 0x01),
    upd_channel = ProtoField.uint32("statesync.update.channel", "Channel", base.DEC),
    upd_public = ProtoField.uint16("statesync.update.public_count", "Public entries", base.DEC),
    upd_private = ProtoField.uint16("statesync.update.private_count", "Private entries", base.DEC),
    upd_op = ProtoField.uint64("statesync.update.op", "Op", base.DEC),
    upd_cookie = ProtoField.uint64("statesync.update.cookie", "Cookie (sections)", base.HEX),
    entry = ProtoField.none("statesync.entry", "Entry"),
    ent_head = ProtoField.uint8("statesync.entry.head", "Head", base.HEX),
    ent_section = ProtoField.uint8("statesync.entry.section", "Section", base.DEC, nil, 0x3f),
    ent_delete = ProtoField.bool("statesync.entry.delete", "Delete", 8, nil, HEAD_DELETE),
    ent_wide_key = ProtoField.bool("statesync.entry.wide_key", "Wide key (u64)", 8, nil, HEAD_WIDE_KEY),
    -- A delete has no value length; the key is a u32 unless the head says wide (u64).
    ent_key = ProtoField.uint64("statesync.entry.key", "Key", base.DEC),
    ent_value_len = ProtoField.uint16("statesync.entry.value_len", "Value length", base.DEC),
    ent_value = ProtoField.bytes("statesync.entry.value", "Value"),
    ent_private = ProtoField.bool("statesync.entry.private", "Private (primary-only)"),
    -- UPDATE_RUN: a fixed part, then ops to the end of the body.
    run_channel = ProtoField.uint32("statesync.run.channel", "Channel", base.DEC),
    run_first_op = ProtoField.uint64("statesync.run.first_op", "First op", base.DEC),
    run_op_count = ProtoField.uint16("statesync.run.op_count", "Ops", base.DEC),
    -- One op of an UPDATE_RUN; op ID and cookie are computed, the counts are a byte each.
    runop = ProtoField.none("statesync.runop", "Op"),
    runop_op = ProtoField.uint64("statesync.runop.op", "Op", base.DEC),
    runop_cookie = ProtoField.uint64("statesync.runop.cookie", "Cookie (sections)", base.HEX),
    runop_public = ProtoField.uint8("statesync.runop.public_count", "Public entries", base.DEC),
    runop_private = ProtoField.uint8("statesync.runop.private_count", "Private entries", base.DEC),
    -- ACK, FWD_ACK, LA_QUERY: ChannelOp (§4.2).
    co_channel = ProtoField.uint32("statesync.chanop.channel", "Channel", base.DEC),
    co_generation = ProtoField.uint32("statesync.chanop.generation", "Generation", base.DEC),
    co_op = ProtoField.uint64("statesync.chanop.op", "Op", base.DEC),
    -- COMMIT.
    cm_channel = ProtoField.uint32("statesync.commit.channel", "Channel", base.DEC),
    cm_reserved = ProtoField.uint32("statesync.commit.reserved", "Reserved", base.DEC),
    cm_applied = ProtoField.uint64("statesync.commit.applied", "Applied", base.DEC),
    cm_held = ProtoField.uint64("statesync.commit.held", "Held", base.DEC),
    -- NACK.
    nk_channel = ProtoField.uint32("statesync.nack.channel", "Channel", base.DEC),
    nk_generation = ProtoField.uint32("statesync.nack.generation", "Generation", base.DEC),
    nk_from = ProtoField.uint64("statesync.nack.from", "From op", base.DEC),
    nk_to = ProtoField.uint64("statesync.nack.to", "To op", base.DEC),
    -- HEARTBEAT.
    hb_role = ProtoField.uint8("statesync.hb.role", "Role", base.DEC, ROLES),
    hb_flags = ProtoField.uint8("statesync.hb.flags", "Heartbeat flags", base.HEX),
    hb_lost = ProtoField.bool("statesync.hb.flags.primary_lost", "Primary lost", 8, nil, 0x01),
    hb_needs = ProtoField.bool("statesync.hb.flags.needs_transfer", "Needs transfer", 8, nil, 0x02),
    hb_joined = ProtoField.bool("statesync.hb.flags.joined", "Joined", 8, nil, 0x04),
    hb_switch = ProtoField.bool("statesync.hb.flags.switchover", "Switchover", 8, nil, 0x08),
    hb_sync_version = ProtoField.uint16("statesync.hb.sync_version", "Sync-set version", base.DEC),
    hb_sync_mask = ProtoField.uint32("statesync.hb.sync_mask", "Sync mask", base.HEX),
    -- Primary: switchover target (with the switchover flag); standbys and clients: boot ID.
    hb_boot_or_target = ProtoField.uint32("statesync.hb.boot_or_target", "Boot ID / switchover target", base.DEC),
    hb_vote = ProtoField.uint32("statesync.hb.vote", "Vote", base.DEC),
    hb_view_epoch = ProtoField.uint64("statesync.hb.view_epoch", "Sync-set epoch", base.DEC),
    -- LA_REPLY.
    la_channel = ProtoField.uint32("statesync.lareply.channel", "Channel", base.DEC),
    la_flags = ProtoField.uint32("statesync.lareply.flags", "Flags", base.HEX),
    la_unknown = ProtoField.bool("statesync.lareply.flags.unknown", "No history (full replay)", 32, nil, 0x01),
    la_last_applied = ProtoField.uint64("statesync.lareply.last_applied", "Last applied", base.DEC),
    la_cookie_above = ProtoField.uint64("statesync.lareply.cookie_above", "Cookie above", base.HEX),
    la_data_epoch = ProtoField.uint64("statesync.lareply.data_epoch", "Data epoch", base.DEC),
    -- REPLAY_BEGIN, XFER_BEGIN.
    bb_channel = ProtoField.uint32("statesync.begin.channel", "Channel", base.DEC),
    bb_stream = ProtoField.uint32("statesync.begin.stream", "Stream", base.DEC),
    bb_sections = ProtoField.uint64("statesync.begin.sections", "Sections", base.HEX),
    bb_base_op = ProtoField.uint64("statesync.begin.base_op", "Base op", base.DEC),
    bb_acked_op = ProtoField.uint64("statesync.begin.acked_op", "Acked op", base.DEC),
    -- REPLAY_ENTRY, XFER_ENTRY.
    be_channel = ProtoField.uint32("statesync.bentry.channel", "Channel", base.DEC),
    be_stream = ProtoField.uint32("statesync.bentry.stream", "Stream", base.DEC),
    be_index = ProtoField.uint32("statesync.bentry.index", "Index", base.DEC),
    be_section = ProtoField.uint8("statesync.bentry.section", "Section", base.DEC),
    be_flags = ProtoField.uint8("statesync.bentry.flags", "Flags", base.HEX),
    be_private = ProtoField.bool("statesync.bentry.flags.private", "Private", 8, nil, 0x01),
    be_value_len = ProtoField.uint16("statesync.bentry.value_len", "Value length", base.DEC),
    be_key = ProtoField.uint64("statesync.bentry.key", "Key", base.DEC),
    be_value = ProtoField.bytes("statesync.bentry.value", "Value"),
    -- REPLAY_END, XFER_END.
    bn_channel = ProtoField.uint32("statesync.end.channel", "Channel", base.DEC),
    bn_stream = ProtoField.uint32("statesync.end.stream", "Stream", base.DEC),
    bn_total = ProtoField.uint32("statesync.end.total", "Total items", base.DEC),
    bn_reserved = ProtoField.uint32("statesync.end.reserved", "Reserved", base.DEC),
    bn_base_op = ProtoField.uint64("statesync.end.base_op", "Base op", base.DEC),
    -- REPLAY_ACK, XFER_ACK.
    ba_channel = ProtoField.uint32("statesync.bulkack.channel", "Channel", base.DEC),
    ba_stream = ProtoField.uint32("statesync.bulkack.stream", "Stream", base.DEC),
    ba_next_index = ProtoField.uint32("statesync.bulkack.next_index", "Next index", base.DEC),
    ba_done = ProtoField.uint32("statesync.bulkack.done", "Done", base.DEC),
    -- XFER_HISTORY.
    hi_channel = ProtoField.uint32("statesync.history.channel", "Channel", base.DEC),
    hi_stream = ProtoField.uint32("statesync.history.stream", "Stream", base.DEC),
    hi_index = ProtoField.uint32("statesync.history.index", "Index", base.DEC),
    hi_reserved = ProtoField.uint32("statesync.history.reserved", "Reserved", base.DEC),
    hi_epoch = ProtoField.uint64("statesync.history.epoch", "Epoch", base.DEC),
    hi_start_op = ProtoField.uint64("statesync.history.start_op", "Start op", base.DEC),
}
local fields = {}
for _, v in pairs(f) do fields[#fields + 1] = v end
p.fields = fields

local e_malformed = ProtoExpert.new("statesync.malformed", "Malformed statesync frame",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unknown = ProtoExpert.new("statesync.unknown_kind", "Unknown message kind",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unauth = ProtoExpert.new("statesync.unauthenticated",
    "Frame not authenticated (sent with --insecure or authentication off)",
    expert.group.SECURITY, expert.severity.NOTE)
local e_opener = ProtoExpert.new("statesync.opener",
    "Session opener: the sender has not heard the receiver's boot nonce; its messages are not acted upon",
    expert.group.SEQUENCE, expert.severity.CHAT)
local e_flags = ProtoExpert.new("statesync.unassigned_flags", "Unassigned frame flags set",
    expert.group.PROTOCOL, expert.severity.WARN)
p.experts = { e_malformed, e_unknown, e_unauth, e_opener, e_flags }

-- Adds `spec` ({field, size} pairs, little-endian) at `off` under `tree`; returns the end.
local function add_le(tree, tvb, off, spec)
    for _, s in ipairs(spec) do
        tree:add_le(s[1], tvb(off, s[2]))
        off = off + s[2]
    end
    return off
end

-- `public + private` entries from `off`, none past `stop`, shown under `tree` (nil: only
-- walked), each as codec.rs `split_entry` reads it. Returns the offset after the last one and
-- the cookie (the OR of 1 << section over the public ones), or nil and an error text.
local function dissect_entries(tvb, tree, off, stop, public, private)
    local count = public + private
    local cookie = UInt64(0)
    for i = 0, count - 1 do
        if off >= stop then
            return nil, string.format("entry %d of %d is missing (the body ends)", i, count)
        end
        local head = tvb(off, 1):uint()
        local section = head % 64
        local delete = math.floor(head / HEAD_DELETE) % 2 == 1
        local wide = head >= HEAD_WIDE_KEY
        local is_private = i >= public
        local et
        if tree ~= nil then
            et = tree:add(f.entry, tvb(off, 1))
            et:set_text(string.format("Entry %d", i))
            et:add(f.ent_private, tvb(off, 1), is_private):set_generated()
            local ht = et:add(f.ent_head, tvb(off, 1))
            ht:add(f.ent_section, tvb(off, 1))
            ht:add(f.ent_delete, tvb(off, 1))
            ht:add(f.ent_wide_key, tvb(off, 1))
        end
        local len = 1
        local vlen = 0
        if not delete then
            if off + len + 2 > stop then
                return nil, string.format("entry %d value length is cut off by the end of the body", i)
            end
            vlen = tvb(off + len, 2):le_uint()
            if tree ~= nil then
                et:add_le(f.ent_value_len, tvb(off + len, 2))
            end
            len = len + 2
        end
        local klen = wide and 8 or 4
        if off + len + klen > stop then
            return nil, string.format("entry %d key (%d bytes) is cut off by the end of the body", i,
                klen)
        end
        local key = wide and tvb(off + len, 8):le_uint64() or UInt64(tvb(off + len, 4):le_uint())
        if tree ~= nil then
            et:add(f.ent_key, tvb(off + len, klen), key)
        end
        if wide and key <= U32_MAX then
            return nil, string.format("entry %d: wide (8-byte) key %s fits 4 bytes", i, tostring(key))
        end
        len = len + klen
        if not delete then
            if off + len + vlen > stop then
                return nil, string.format("entry %d value of %d bytes runs past the body", i, vlen)
            end
            if vlen > 0 and tree ~= nil then
                et:add(f.ent_value, tvb(off + len, vlen))
            end
            len = len + vlen
        end
        if tree ~= nil then
            et:set_len(len)
            et:set_text(string.format("Entry %d: section %d key %s %s%s", i, section, tostring(key),
                delete and "delete" or (vlen .. " B"), is_private and " (private)" or ""))
        end
        if not is_private then
            cookie = cookie:bor(UInt64(1):lshift(section))
        end
        off = off + len
    end
    return off, cookie
end

-- The ops of an UPDATE_RUN body, from `off` to `stop`, the first being `first_op`. Each op is
-- its public and private entry counts (a byte each) and its entries; it has no length of its
-- own, so ops are read until the body is used up (codec.rs `split_run_op`). Returns the number
-- of ops and an error text (nil when well formed).
local function dissect_run_ops(tvb, mt, off, stop, first_op)
    local n = 0
    while off < stop do
        local op = first_op + n
        local what = string.format("op %s", tostring(op))
        local ot = mt:add(f.runop, tvb(off, math.min(2, stop - off)))
        ot:set_text(string.format("Op %s", tostring(op)))
        if off + 2 > stop then
            return n, string.format("%s: entry counts cut off by the end of the body", what)
        end
        local public = tvb(off, 1):uint()
        local private = tvb(off + 1, 1):uint()
        local at = off + 2
        -- Walked first for the cookie, which is shown before the entries.
        local last, cookie = dissect_entries(tvb, nil, at, stop, public, private)
        if last ~= nil then
            ot:set_len(last - off)
            ot:set_text(string.format("Op %s: cookie 0x%s, %d+%d entries", tostring(op),
                cookie:tohex(), public, private))
            ot:add(f.runop_op, tvb(off, last - off), op):set_generated()
            ot:add(f.runop_cookie, tvb(off, last - off), cookie):set_generated()
        end
        ot:add(f.runop_public, tvb(off, 1))
        ot:add(f.runop_private, tvb(off + 1, 1))
        local err
        last, err = dissect_entries(tvb, ot, at, stop, public, private)
        if last == nil then
            return n, string.format("%s: %s", what, err)
        end
        off = last
        n = n + 1
    end
    return n, nil
end

-- One message body of `kind` at `off` (`blen` bytes); returns an error text or nil.
local function dissect_body(tvb, mt, kind, mflags, off, blen)
    local want = FIXED_BODY[kind]
    if want ~= nil and blen ~= want then
        return string.format("body of %s is %d bytes, must be %d", KINDS[kind], blen, want)
    end
    if kind == 1 or kind == 18 then
        if blen < UPDATE_FIXED_BYTES then
            return string.format("%s body of %d bytes is shorter than its 24-byte fixed part", KINDS[kind], blen)
        end
        local public = tvb(off + 4, 2):le_uint()
        local private = tvb(off + 6, 2):le_uint()
        mt:append_text(string.format(": channel %d op %s, %d+%d entries", tvb(off, 4):le_uint(),
            tostring(tvb(off + 8, 8):le_uint64()), public, private))
        add_le(mt, tvb, off, { { f.upd_channel, 4 }, { f.upd_public, 2 }, { f.upd_private, 2 },
            { f.upd_op, 8 }, { f.upd_cookie, 8 } })
        if mflags > 1 then
            return string.format("unknown %s flags 0x%02x", KINDS[kind], mflags)
        end
        local last, err = dissect_entries(tvb, mt, off + UPDATE_FIXED_BYTES, off + blen, public,
            private)
        if last == nil then
            return err
        end
        if last ~= off + blen then
            return string.format("%d bytes after the last entry", off + blen - last)
        end
    elseif kind == 19 then
        if blen < RUN_FIXED_BYTES then
            return string.format("%s body of %d bytes is shorter than its 12-byte fixed part", KINDS[kind], blen)
        end
        local first_op = tvb(off + 4, 8):le_uint64()
        add_le(mt, tvb, off, { { f.run_channel, 4 }, { f.run_first_op, 8 } })
        if mflags ~= 0 then
            return string.format("unknown %s flags 0x%02x", KINDS[kind], mflags)
        end
        if blen == RUN_FIXED_BYTES then
            return "UPDATE_RUN without ops"
        end
        if first_op == UInt64(0) then
            return "UPDATE_RUN first_op is 0"
        end
        local n, err = dissect_run_ops(tvb, mt, off + RUN_FIXED_BYTES, off + blen, first_op)
        mt:add(f.run_op_count, tvb(off + RUN_FIXED_BYTES, blen - RUN_FIXED_BYTES), n):set_generated()
        if err ~= nil then
            mt:append_text(string.format(": channel %d from op %s", tvb(off, 4):le_uint(),
                tostring(first_op)))
            return err
        end
        local last_op = first_op + (n - 1)
        mt:append_text(string.format(": channel %d ops %s..=%s (%d)", tvb(off, 4):le_uint(),
            tostring(first_op), tostring(last_op), n))
        -- The last op is at most 2^62 (checked without overflowing: first_op may be huge).
        if first_op > MAX_RUN_OP or UInt64(n - 1) > MAX_RUN_OP - first_op then
            return string.format("UPDATE_RUN last op %s is above 2^62", tostring(last_op))
        end
    elseif kind == 2 or kind == 3 or kind == 7 then
        mt:append_text(string.format(": channel %d op %s", tvb(off, 4):le_uint(),
            tostring(tvb(off + 8, 8):le_uint64())))
        add_le(mt, tvb, off, { { f.co_channel, 4 }, { f.co_generation, 4 }, { f.co_op, 8 } })
    elseif kind == 4 then
        mt:append_text(string.format(": channel %d applied %s held %s", tvb(off, 4):le_uint(),
            tostring(tvb(off + 8, 8):le_uint64()), tostring(tvb(off + 16, 8):le_uint64())))
        add_le(mt, tvb, off, { { f.cm_channel, 4 }, { f.cm_reserved, 4 }, { f.cm_applied, 8 },
            { f.cm_held, 8 } })
    elseif kind == 5 then
        local from, to = tvb(off + 8, 8):le_uint64(), tvb(off + 16, 8):le_uint64()
        mt:append_text(string.format(": channel %d ops %s..=%s", tvb(off, 4):le_uint(),
            tostring(from), tostring(to)))
        add_le(mt, tvb, off, { { f.nk_channel, 4 }, { f.nk_generation, 4 }, { f.nk_from, 8 },
            { f.nk_to, 8 } })
        if to < from then
            return "NACK range from > to"
        end
    elseif kind == 6 then
        local role = tvb(off, 1):uint()
        mt:append_text(string.format(": %s", ROLES[role] or ("role " .. role)))
        mt:add_le(f.hb_role, tvb(off, 1))
        local ft = mt:add_le(f.hb_flags, tvb(off + 1, 1))
        for _, b in ipairs({ f.hb_lost, f.hb_needs, f.hb_joined, f.hb_switch }) do
            ft:add_le(b, tvb(off + 1, 1))
        end
        add_le(mt, tvb, off + 2, { { f.hb_sync_version, 2 }, { f.hb_sync_mask, 4 } })
        local tt = mt:add_le(f.hb_boot_or_target, tvb(off + 8, 4))
        tt:append_text(role == 1 and " (switchover target)" or " (boot ID: changes on every restart)")
        mt:add_le(f.hb_vote, tvb(off + 12, 4))
        mt:add_le(f.hb_view_epoch, tvb(off + 16, 8))
    elseif kind == 8 then
        mt:append_text(string.format(": channel %d last applied %s", tvb(off, 4):le_uint(),
            tostring(tvb(off + 8, 8):le_uint64())))
        mt:add_le(f.la_channel, tvb(off, 4))
        local ft = mt:add_le(f.la_flags, tvb(off + 4, 4))
        ft:add_le(f.la_unknown, tvb(off + 4, 4))
        add_le(mt, tvb, off + 8, { { f.la_last_applied, 8 }, { f.la_cookie_above, 8 },
            { f.la_data_epoch, 8 } })
    elseif kind == 9 or kind == 13 then
        mt:append_text(string.format(": channel %d stream %d base op %s", tvb(off, 4):le_uint(),
            tvb(off + 4, 4):le_uint(), tostring(tvb(off + 16, 8):le_uint64())))
        add_le(mt, tvb, off, { { f.bb_channel, 4 }, { f.bb_stream, 4 }, { f.bb_sections, 8 },
            { f.bb_base_op, 8 }, { f.bb_acked_op, 8 } })
    elseif kind == 10 or kind == 14 then
        if blen < 24 then
            return string.format("%s body of %d bytes is shorter than its 24-byte fixed part", KINDS[kind], blen)
        end
        local vlen = tvb(off + 14, 2):le_uint()
        mt:append_text(string.format(": channel %d stream %d index %d", tvb(off, 4):le_uint(),
            tvb(off + 4, 4):le_uint(), tvb(off + 8, 4):le_uint()))
        add_le(mt, tvb, off, { { f.be_channel, 4 }, { f.be_stream, 4 }, { f.be_index, 4 },
            { f.be_section, 1 } })
        local ft = mt:add_le(f.be_flags, tvb(off + 13, 1))
        ft:add_le(f.be_private, tvb(off + 13, 1))
        add_le(mt, tvb, off + 14, { { f.be_value_len, 2 }, { f.be_key, 8 } })
        if vlen > 0 and 24 + vlen <= blen then
            mt:add(f.be_value, tvb(off + 24, vlen))
        end
        if 24 + vlen ~= blen then
            return string.format("value length %d does not fill the %d-byte body", vlen, blen)
        end
        if tvb(off + 12, 1):uint() >= SECTIONS then
            return "section out of range 0..63"
        end
        if tvb(off + 13, 1):uint() > 1 then
            return "unknown bulk entry flags"
        end
    elseif kind == 11 or kind == 15 then
        mt:append_text(string.format(": channel %d stream %d total %d", tvb(off, 4):le_uint(),
            tvb(off + 4, 4):le_uint(), tvb(off + 8, 4):le_uint()))
        add_le(mt, tvb, off, { { f.bn_channel, 4 }, { f.bn_stream, 4 }, { f.bn_total, 4 },
            { f.bn_reserved, 4 }, { f.bn_base_op, 8 } })
    elseif kind == 12 or kind == 16 then
        mt:append_text(string.format(": channel %d stream %d next %d", tvb(off, 4):le_uint(),
            tvb(off + 4, 4):le_uint(), tvb(off + 8, 4):le_uint()))
        add_le(mt, tvb, off, { { f.ba_channel, 4 }, { f.ba_stream, 4 }, { f.ba_next_index, 4 },
            { f.ba_done, 4 } })
    elseif kind == 17 then
        mt:append_text(string.format(": channel %d stream %d index %d", tvb(off, 4):le_uint(),
            tvb(off + 4, 4):le_uint(), tvb(off + 8, 4):le_uint()))
        add_le(mt, tvb, off, { { f.hi_channel, 4 }, { f.hi_stream, 4 }, { f.hi_index, 4 },
            { f.hi_reserved, 4 }, { f.hi_epoch, 8 }, { f.hi_start_op, 8 } })
    end
    return nil
end

local function is_statesync(tvb)
    return tvb:len() >= HEADER_BYTES + TRAILER_BYTES and tvb(0, 4):uint() == MAGIC_BE
end

-- One frame; `tvb` holds exactly its bytes. Returns its Info column text.
local function dissect_frame(tvb, pinfo, tree)
    local len = tvb:len()
    local root = tree:add(p, tvb(), "statesync state synchronization")
    local version = tvb(4, 1):uint()
    local fflags = tvb(5, 1):uint()
    local count = tvb(6, 2):le_uint()
    local sender = tvb(8, 4):le_uint()
    local payload_len = tvb(12, 4):le_uint()
    local seq = tvb(24, 8):le_uint64()
    local hello = seq:rshift(63):tonumber() == 1

    local ht = root:add(tvb(0, HEADER_BYTES), "Frame header")
    ht:add_le(f.magic, tvb(0, 4))
    ht:add_le(f.version, tvb(4, 1))
    local ft = ht:add_le(f.flags, tvb(5, 1))
    ft:add_le(f.flag_auth, tvb(5, 1))
    add_le(ht, tvb, 6, { { f.msg_count, 2 }, { f.sender, 4 }, { f.payload_len, 4 }, { f.epoch, 8 } })
    local st = ht:add_le(f.packet_seq, tvb(24, 8))
    if hello then
        st:append_text(" (hello: bit 63 set, outside the core's numbering)")
    end

    local trailer_at = len - TRAILER_BYTES
    local tt = root:add(f.trailer, tvb(trailer_at, TRAILER_BYTES))
    tt:add_le(f.sender_boot, tvb(trailer_at, 8))
    local receiver_boot = tvb(trailer_at + 8, 8):le_uint64()
    tt:add_le(f.receiver_boot, tvb(trailer_at + 8, 8))
    tt:add(f.tag, tvb(trailer_at + 16, 16))

    local ftype
    if fflags % 2 == 0 then
        ftype = "unauthenticated"
        tt:add_proto_expert_info(e_unauth)
    elseif hello then
        ftype = "hello"
    elseif receiver_boot:tonumber() == 0 then
        ftype = "opener"
        tt:add_proto_expert_info(e_opener)
    else
        ftype = "data"
    end
    root:add(f.frame_type, tvb(24, 8), ftype):set_generated()

    local info = string.format("%d → e%s #%s", sender, tostring(tvb(16, 8):le_uint64()),
        hello and ("hello " .. tostring(seq:band(UInt64(0xffffffff, 0x7fffffff)))) or tostring(seq))
    if ftype ~= "data" then
        info = info .. " [" .. ftype .. "]"
    end
    root:append_text(string.format(", sender %d, %d messages, %s", sender, count, ftype))

    local err
    if version ~= 2 then
        err = string.format("unsupported version %d (this dissector knows version 2)", version)
    elseif payload_len + HEADER_BYTES + TRAILER_BYTES ~= len then
        err = string.format("payload_len %d + 64 does not match the datagram length %d", payload_len, len)
    end
    if fflags > 1 then
        -- Written as 0 by this version; a receiver ignores them (they may gain a meaning).
        root:add_proto_expert_info(e_flags, string.format("unassigned frame flags 0x%02x", fflags))
    end
    if err ~= nil then
        root:add_proto_expert_info(e_malformed, err)
        return info .. " [malformed]"
    end

    local off = HEADER_BYTES
    local stop = HEADER_BYTES + payload_len
    local seen, order, n = {}, {}, 0
    while off < stop do
        if off + MSG_HEADER_BYTES > stop then
            err = "message header runs past the payload"
            break
        end
        local kind = tvb(off, 1):uint()
        local mflags = tvb(off + 1, 1):uint()
        local blen = tvb(off + 2, 2):le_uint()
        if off + MSG_HEADER_BYTES + blen > stop then
            err = string.format("message %d body runs past the payload", n)
            break
        end
        local name = KINDS[kind] or ("kind " .. kind)
        local mt = root:add(f.msg, tvb(off, MSG_HEADER_BYTES + blen))
        mt:set_text(string.format("Message %d: %s", n, name))
        mt:add_le(f.kind, tvb(off, 1))
        local mft = mt:add_le(f.msg_flags, tvb(off + 1, 1))
        if kind == 1 or kind == 18 then
            mft:add_le(f.upd_preapplied, tvb(off + 1, 1))
        end
        mt:add_le(f.body_len, tvb(off + 2, 2))
        if KINDS[kind] == nil then
            mt:add_proto_expert_info(e_unknown, string.format("unknown message kind %d", kind))
        else
            local berr = dissect_body(tvb, mt, kind, mflags, off + MSG_HEADER_BYTES, blen)
            if berr ~= nil then
                mt:add_proto_expert_info(e_malformed, berr)
            end
        end
        if seen[name] == nil then
            seen[name] = 0
            order[#order + 1] = name
        end
        seen[name] = seen[name] + 1
        n = n + 1
        off = off + MSG_HEADER_BYTES + blen
    end
    if err ~= nil then
        root:add_proto_expert_info(e_malformed, err)
    elseif n ~= count then
        root:add_proto_expert_info(e_malformed,
            string.format("msg_count %d but the payload holds %d messages", count, n))
    end
    local parts = {}
    for _, name in ipairs(order) do
        parts[#parts + 1] = (seen[name] > 1) and (name .. "×" .. seen[name]) or name
    end
    if #parts > 0 then
        info = info .. " " .. table.concat(parts, " ")
    end
    return info
end

-- Length of the frame at `off`: the whole rest, unless a whole frame ends before it and another
-- one starts there. A sender using UDP GSO (UDP_SEGMENT) hands the kernel several frames of
-- `gso_size` bytes in one send, and a loopback capture sees them before segmentation, as one
-- datagram; each segment is a frame of its own on the wire.
local function frame_len(tvb, off)
    local rest = tvb:len() - off
    if rest < HEADER_BYTES + TRAILER_BYTES or tvb(off, 4):uint() ~= MAGIC_BE then
        return rest
    end
    local want = tvb(off + 12, 4):le_uint() + HEADER_BYTES + TRAILER_BYTES
    if want + HEADER_BYTES + TRAILER_BYTES <= rest and tvb(off + want, 4):uint() == MAGIC_BE then
        return want
    end
    return rest
end

function p.dissector(tvb, pinfo, tree)
    if not is_statesync(tvb) then
        return 0
    end
    local len = tvb:len()
    pinfo.cols.protocol = "statesync"
    local off, infos = 0, {}
    while off < len do
        local flen = frame_len(tvb, off)
        if off > 0 and not is_statesync(tvb(off, flen):tvb()) then
            tree:add_proto_expert_info(e_malformed,
                string.format("%d bytes after the last frame are not a frame", flen))
            break
        end
        infos[#infos + 1] = dissect_frame(tvb(off, flen):tvb(), pinfo, tree)
        off = off + flen
    end
    local info = table.concat(infos, " | ")
    if #infos > 1 then
        info = string.format("[GSO: %d frames] ", #infos) .. info
    end
    pinfo.cols.info = info
    return len
end

-- Heuristic: magic "SSYN", version 2 and a payload length that fills the datagram exactly
-- (or, in a GSO send, that ends where the next frame starts).
local function heuristic(tvb, pinfo, tree)
    if not is_statesync(tvb) or tvb(4, 1):uint() ~= 2 then
        return false
    end
    if tvb(12, 4):le_uint() + HEADER_BYTES + TRAILER_BYTES ~= frame_len(tvb, 0) then
        return false
    end
    p.dissector(tvb, pinfo, tree)
    return true
end
p:register_heuristic("udp", heuristic)

-- Fixed ports: configs/router-small.toml (17101-17102 control units, 17200-17202 line cards)
-- and `statesync drill --netns` (7100 in every namespace).
local DEFAULT_PORTS = "7100,17101-17102,17200-17202"
p.prefs.ports = Pref.range("UDP ports", DEFAULT_PORTS,
    "UDP ports decoded as statesync (other ports are found by the heuristic)", 65535)
local function register_ports()
    local t = DissectorTable.get("udp.port")
    t:remove_all(p)
    t:add(p.prefs.ports, p)
end
function p.prefs_changed()
    register_ports()
end
register_ports()

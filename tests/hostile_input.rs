//! Hostile input at a control unit (issue 9): values decoded from the network are range-checked
//! and counted before any arithmetic, no assertion is reachable from a datagram, and one
//! datagram causes a bounded amount of work.

use statesync::proto::control::ControlUnit;
use statesync::proto::{Epoch, INITIAL_EPOCH, MAX_EPOCH_COUNTER, ProtoConfig, Role, Topology};
use statesync::wire::{
    BulkBegin, BulkEnd, BulkEntry, ChannelOp, Entry, FrameBuilder, HB_FLAG_NEEDS_TRANSFER,
    HeartbeatBody, HistoryBody, Kind, MAX_FRAME_BYTES, NackBody, ROLE_PRIMARY, ROLE_STANDBY,
    UPDATE_FLAG_PREAPPLIED, encode_entry,
};

fn config() -> ProtoConfig {
    ProtoConfig::new(Topology {
        control_units: vec![1, 2],
        clients: vec![100],
        channel_owner: vec![100, 100],
        submitters: vec![],
    })
}

fn heartbeat(role: u8, flags: u8, sync_mask: u32, target: u32) -> HeartbeatBody {
    HeartbeatBody {
        role,
        flags,
        sync_version: 0.into(),
        sync_mask: sync_mask.into(),
        boot_or_target: target.into(),
        vote: 0.into(),
        view_epoch: 0.into(),
    }
}

/// Runs `cu` on virtual time from `from_us` to `to_us` in 1 ms steps, draining its output.
fn drive(cu: &mut ControlUnit, from_us: u64, to_us: u64) {
    let mut buf = vec![0u8; 2048];
    let mut t = from_us;
    while t <= to_us {
        cu.handle_timeout(t);
        while cu.poll_transmit(t, &mut buf).is_some() {}
        while cu.poll_event().is_some() {}
        t += 1_000;
    }
}

fn primary_with_state() -> ControlUnit {
    let mut p = ControlUnit::new(config(), 1, true, 7, 0);
    drive(&mut p, 0, 2_000);
    assert_eq!(p.role(), Role::Primary);
    for key in 0..200u64 {
        let value = key.to_le_bytes();
        let e = Entry {
            section: (key % 8) as u8,
            key,
            value: Some(&value),
            private: false,
        };
        p.submit(3_000, (key % 2) as u32, &[e])
            .expect("room in the window");
    }
    p
}

/// Sends `cu` one heartbeat frame of client 100 with `boot` as its boot ID.
fn client_heartbeat(cu: &mut ControlUnit, now_us: u64, epoch: u64, seq: u64, boot: u32) {
    let mut buf = vec![0u8; 256];
    let mut fb = FrameBuilder::new(&mut buf, 100, epoch, seq);
    assert!(fb.push(Kind::Heartbeat, &heartbeat(0, 0, 0, boot)));
    let len = fb.finish();
    cu.handle_datagram(now_us, &buf[..len]);
}

/// A 64 KiB datagram packed with NEEDS_TRANSFER heartbeats, each from a "new life" of the
/// client, used to start a full replay of every channel of the client per heartbeat.
#[test]
fn a_datagram_of_needs_transfer_heartbeats_costs_one_heartbeat() {
    let mut p = primary_with_state();
    let epoch = p.epoch();
    // The primary knows the client's current life.
    client_heartbeat(&mut p, 3_500, epoch, 1, 5);
    assert_eq!(p.counters.replays_started, 0);
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    let mut fb = FrameBuilder::new(&mut buf, 100, epoch, 2);
    let mut n = 0u32;
    while fb.push(
        Kind::Heartbeat,
        &heartbeat(0, HB_FLAG_NEEDS_TRANSFER, 0, 1000 + n),
    ) {
        n += 1;
    }
    let len = fb.finish();
    assert!(n > 1000, "{n} heartbeats in {len} bytes");
    let before = p.counters.replays_started;
    p.handle_datagram(4_000, &buf[..len]);
    assert_eq!(
        p.counters.replays_started - before,
        2,
        "one full replay per channel of the client, not one per heartbeat"
    );
    assert_eq!(p.counters.rejected_extra_heartbeats, u64::from(n) - 1);
    assert_eq!(p.role(), Role::Primary);
}

/// A state transfer whose history names an epoch above the one it came in, then a takeover:
/// the history segment used to be kept, and the takeover's own segment then hit the
/// "history epochs increase" assertion.
#[test]
fn transferred_history_with_a_huge_epoch_is_refused_and_the_takeover_survives() {
    let mut s = ControlUnit::new(config(), 2, true, 9, 0);
    let mut buf = vec![0u8; 2048];
    let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, 1);
    assert!(fb.push(Kind::Heartbeat, &heartbeat(ROLE_PRIMARY, 0, 0b11, 0)));
    for channel in 0..2u32 {
        let stream = 50 + channel;
        let begin = BulkBegin {
            channel: channel.into(),
            stream: stream.into(),
            sections: u64::MAX.into(),
            base_op: 0.into(),
            acked_op: 0.into(),
        };
        let history = HistoryBody {
            channel: channel.into(),
            stream: stream.into(),
            index: 0.into(),
            reserved: 0.into(),
            epoch: (u64::MAX - 0xff).into(),
            start_op: 1.into(),
        };
        let end = BulkEnd {
            channel: channel.into(),
            stream: stream.into(),
            total: 1.into(),
            reserved: 0.into(),
            base_op: 0.into(),
        };
        assert!(fb.push(Kind::XferBegin, &begin));
        assert!(fb.push(Kind::XferHistory, &history));
        assert!(fb.push(Kind::XferEnd, &end));
    }
    let len = fb.finish();
    s.handle_datagram(1_000, &buf[..len]);
    assert_eq!(s.role(), Role::Standby, "the transfer completed");
    assert_eq!(
        s.counters.rejected_unexpected, 2,
        "one refused segment per channel"
    );
    // The primary falls silent: the standby takes over and starts its own history segment.
    drive(&mut s, 2_000, 400_000);
    assert_eq!(s.role(), Role::Primary);
    assert!(s.epoch() > INITIAL_EPOCH);
}

/// Op IDs past the accepted range in a transfer's BEGIN: refused before `op + 1` is taken.
#[test]
fn a_transfer_with_op_ids_out_of_range_is_refused() {
    let mut s = ControlUnit::new(config(), 2, true, 9, 0);
    let mut buf = vec![0u8; 2048];
    let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, 1);
    let begin = BulkBegin {
        channel: 0.into(),
        stream: 5.into(),
        sections: u64::MAX.into(),
        base_op: u64::MAX.into(),
        acked_op: u64::MAX.into(),
    };
    assert!(fb.push(Kind::XferBegin, &begin));
    let len = fb.finish();
    s.handle_datagram(1_000, &buf[..len]);
    assert_eq!(s.counters.rejected_unexpected, 1);
    assert_eq!(
        s.role(),
        Role::Standby,
        "the refused stream changed nothing"
    );
}

/// A frame whose epoch counter is past any real number of failovers is malformed: adopting
/// it would make the next epoch overflow.
#[test]
fn an_epoch_past_the_range_is_malformed() {
    let mut s = ControlUnit::new(config(), 2, true, 9, 0);
    let mut buf = vec![0u8; 256];
    let mut fb = FrameBuilder::new(
        &mut buf,
        1,
        Epoch::new(MAX_EPOCH_COUNTER + 1, 0).unwrap().get(),
        1,
    );
    assert!(fb.push(Kind::Heartbeat, &heartbeat(ROLE_PRIMARY, 0, 0b11, 0)));
    let len = fb.finish();
    s.handle_datagram(1_000, &buf[..len]);
    assert_eq!(s.counters.rejected_malformed, 1);
    assert_eq!((s.role(), s.epoch()), (Role::Standby, INITIAL_EPOCH));
}

/// A standby's heartbeat delayed past a newer one of the same life is stale. It used to be
/// acted on: a NEEDS_TRANSFER sent while the standby was joining, arriving after its transfer
/// completed, dropped it from the sync set again; with the primary then crashing, no unit was
/// eligible to take over, for good (simulator seeds 7986 and 114684).
#[test]
fn a_delayed_standby_heartbeat_does_not_drop_a_joined_standby() {
    let mut p = primary_with_state();
    let epoch = p.epoch();
    assert_eq!(p.sync_mask(), 0b10, "the standby starts in the sync set");
    let frame = |seq: u64, flags: u8| {
        let mut buf = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut buf, 2, epoch, seq);
        assert!(fb.push(Kind::Heartbeat, &heartbeat(ROLE_STANDBY, flags, 0b11, 9)));
        let len = fb.finish();
        buf.truncate(len);
        buf
    };
    p.handle_datagram(4_000, &frame(10, statesync::wire::HB_FLAG_JOINED));
    p.handle_datagram(4_100, &frame(5, HB_FLAG_NEEDS_TRANSFER));
    assert_eq!(p.sync_mask(), 0b10, "still in the sync set");
    assert_eq!(p.counters.rejected_stale_heartbeats, 1);
    // The same request from a new life of the standby (another boot ID) is acted on.
    let mut buf = vec![0u8; 256];
    let mut fb = FrameBuilder::new(&mut buf, 2, epoch, 1);
    assert!(fb.push(
        Kind::Heartbeat,
        &heartbeat(ROLE_STANDBY, HB_FLAG_NEEDS_TRANSFER, 0, 10)
    ));
    let len = fb.finish();
    p.handle_datagram(4_200, &buf[..len]);
    assert_eq!(
        p.sync_mask(),
        0,
        "a restarted standby re-joins through a transfer"
    );
}

/// One datagram from a configured line card's address, whose header names a higher epoch
/// owned by the standby, used to make the primary adopt that epoch, wipe its channels and go
/// `joining`: nothing committed after that. A client frame never makes a control unit adopt
/// an epoch; the claim is counted and only prompts heartbeats to the other control units.
#[test]
fn one_forged_client_datagram_does_not_demote_the_primary() {
    let mut p = primary_with_state();
    let epoch = p.epoch();
    let next = p.next_op(0);
    let forged = Epoch::new(9, 1).unwrap().get();
    let mut buf = vec![0u8; 256];
    let mut fb = FrameBuilder::new(&mut buf, 100, forged, 1);
    assert!(fb.push(Kind::Heartbeat, &heartbeat(0, 0, 0, 5)));
    let len = fb.finish();
    p.handle_datagram(4_000, &buf[..len]);
    assert_eq!((p.role(), p.epoch()), (Role::Primary, epoch));
    assert_eq!(p.counters.rejected_foreign_epoch, 1);
    assert_eq!(p.next_op(0), next, "no channel state was wiped");
    // It still takes changes.
    let e = Entry {
        section: 0,
        key: 1,
        value: Some(b"v"),
        private: false,
    };
    assert!(p.submit(5_000, 0, &[e]).is_ok());
}

/// A primary heartbeat delayed past a newer one of the same epoch is stale. It used to
/// overwrite the sync set the standby knew: a standby that had just learnt it joined forgot
/// it, and when the primary then crashed no unit was eligible, for good (seed 1084072).
#[test]
fn a_delayed_primary_heartbeat_does_not_roll_back_the_sync_set() {
    let mut s = ControlUnit::new(config(), 2, true, 9, 0);
    let frame = |seq: u64, mask: u32, version: u16| {
        let mut buf = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, seq);
        let mut hb = heartbeat(ROLE_PRIMARY, 0, mask, 0);
        hb.sync_version = version.into();
        assert!(fb.push(Kind::Heartbeat, &hb));
        let len = fb.finish();
        buf.truncate(len);
        buf
    };
    s.handle_datagram(1_000, &frame(10, 0b10, 3));
    assert!(s.is_eligible(), "announced in the sync set");
    s.handle_datagram(1_100, &frame(4, 0b00, 2));
    assert!(s.is_eligible(), "the older announcement is ignored");
    assert_eq!(s.counters.rejected_stale_heartbeats, 1);
}

/// Issue 9: a restarted control unit voted with the default sync-set view it was built with.
/// With three units one vote is a majority, so a standby cut off long ago (S1) could be
/// elected on the restarted primary's vote and lose ops committed with the other standby.
/// A restarted unit has no view of the sync set in this life: it casts no vote.
#[test]
fn a_restarted_unit_casts_no_vote() {
    let cfg = ProtoConfig::new(Topology {
        control_units: vec![1, 2, 3],
        clients: vec![100],
        channel_owner: vec![100],
        submitters: vec![],
    });
    // The old primary (cu 1) restarted; S1 (cu 2) lost the primary and votes for itself.
    let mut p = ControlUnit::new(cfg, 1, false, 2, 0);
    let mut out = vec![0u8; 2048];
    let mut t = 0;
    while t <= 300_000 {
        let mut buf = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut buf, 2, INITIAL_EPOCH, t + 1);
        let mut hb = heartbeat(
            ROLE_STANDBY,
            statesync::wire::HB_FLAG_JOINED | statesync::wire::HB_FLAG_PRIMARY_LOST,
            0b110,
            9,
        );
        hb.vote = 2.into();
        assert!(fb.push(Kind::Heartbeat, &hb));
        let len = fb.finish();
        p.handle_datagram(t, &buf[..len]);
        p.handle_timeout(t);
        while let Some(tx) = p.poll_transmit(t, &mut out) {
            let frame = statesync::wire::FrameReader::new(&out[..tx.len]).expect("valid frame");
            for m in frame.msgs() {
                if let statesync::wire::Msg::Heartbeat(h) = m {
                    assert_eq!(h.vote.get(), 0, "at {t} us: the restarted unit voted");
                }
            }
        }
        t += 1_000;
    }
    assert_eq!(p.role(), Role::Joining);
}

/// A line card that NACKs its channel's updates as fast as it can send datagrams: the primary
/// rewinds its resend cursor at most once per half `nack_interval_us` per channel (an honest
/// client NACKs at most once per `nack_interval_us`), and counts the rest.
#[test]
fn a_nack_flood_is_served_at_an_honest_pace() {
    let mut p = primary_with_state();
    let epoch = p.epoch();
    client_heartbeat(&mut p, 3_500, epoch, 1, 5);
    // The updates go out: the client's cursor is past op 1.
    drive(&mut p, 3_500, 3_600);
    let nack = |p: &mut ControlUnit, now_us: u64, seq: u64| {
        let mut buf = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut buf, 100, epoch, seq);
        let body = NackBody {
            channel: 0.into(),
            generation: 0.into(),
            from: 1.into(),
            to: 2.into(),
        };
        assert!(fb.push(Kind::Nack, &body));
        let len = fb.finish();
        p.handle_datagram(now_us, &buf[..len]);
    };
    // Each NACK is answered before the next comes: every one would rewind the cursor again,
    // and the whole window would go out once per datagram.
    let before = (p.counters.retransmits, p.counters.frames_tx);
    let mut buf = vec![0u8; 2048];
    for seq in 0..1_000 {
        nack(&mut p, 4_000, 10 + seq);
        while p.poll_transmit(4_000, &mut buf).is_some() {}
    }
    assert_eq!(p.counters.retransmits - before.0, 1);
    assert_eq!(p.counters.rejected_nack_rate, 999);
    assert!(p.counters.frames_tx - before.1 < 50, "{:?}", p.counters);
    // Half a NACK interval later (the cursor moved on meanwhile), the next one is served.
    let gap_us = config().nack_interval_us / 2;
    drive(&mut p, 4_000, 4_000 + gap_us);
    nack(&mut p, 4_000 + gap_us, 2_000);
    assert_eq!(p.counters.retransmits - before.0, 2);
    assert_eq!(p.role(), Role::Primary);
}

/// A standby that restarts (a new boot ID) with every heartbeat, each one asking for a state
/// transfer: the primary restarts the transfer at most once per heartbeat interval, and counts
/// the requests it held back (the standby repeats them; an honest one is served).
#[test]
fn a_standby_asking_for_transfers_back_to_back_is_paced() {
    let mut p = primary_with_state();
    let epoch = p.epoch();
    let gap_us = config().heartbeat_interval_us;
    let mut buf = vec![0u8; 2048];
    let from_us = 4_000;
    let to_us = from_us + 20 * gap_us;
    let mut asked = 0u64;
    for (i, t) in (from_us..to_us).step_by(100).enumerate() {
        let mut hb = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut hb, 2, epoch, 10 + i as u64);
        let body = heartbeat(ROLE_STANDBY, HB_FLAG_NEEDS_TRANSFER, 0, 5_000 + i as u32);
        assert!(fb.push(Kind::Heartbeat, &body));
        let len = fb.finish();
        p.handle_datagram(t, &hb[..len]);
        asked += 1;
        p.handle_timeout(t);
        while p.poll_transmit(t, &mut buf).is_some() {}
    }
    let refused = p.counters.rejected_transfer_rate;
    let served = asked - refused;
    assert!(
        (15..=21).contains(&served),
        "{served} of {asked} transfer requests served in 20 heartbeat intervals"
    );
    assert_eq!(p.role(), Role::Primary);
}

/// A line card that claims, again and again, an epoch above the primary's owned by the in-sync
/// standby cannot make the primary hand over: a primary asks for a switchover on such a claim
/// only after that epoch's owner has joined its sync set since the claim began (a candidacy
/// that really died; seed 27005953 in `tests/sim_seeds.rs`).
#[test]
fn a_line_card_claiming_a_standbys_epoch_forces_no_switchover() {
    let mut p = ControlUnit::new(config(), 1, true, 7, 0);
    let mut s = ControlUnit::new(config(), 2, true, 8, 0);
    let claimed = Epoch::new(5, 1).unwrap().get();
    let (mut buf, mut claim) = (vec![0u8; 2048], vec![0u8; 256]);
    let timeout_us = p.config().failover_timeout_us;
    let mut t = 0;
    while t < 10 * timeout_us {
        step(&mut p, &mut s, t, &mut buf);
        step(&mut s, &mut p, t, &mut buf);
        let mut fb = FrameBuilder::new(&mut claim, 100, claimed, t + 1);
        assert!(fb.push(Kind::Heartbeat, &heartbeat(0, 0, 0, 5)));
        let len = fb.finish();
        p.handle_datagram(t, &claim[..len]);
        t += 1_000;
    }
    assert_eq!(p.role(), Role::Primary);
    assert!(s.is_eligible(), "the standby stayed in sync");
    assert_eq!(p.counters.switchovers_for_stuck_clients, 0);
    assert!(p.counters.rejected_foreign_epoch > 100, "{:?}", p.counters);
    let e = Entry {
        section: 0,
        key: 1,
        value: Some(b"v"),
        private: false,
    };
    assert!(p.submit(t, 0, &[e]).is_ok(), "it still takes changes");
}

/// Runs `src`'s timers at `t` and delivers what it sends `dst` at once.
fn step(src: &mut ControlUnit, dst: &mut ControlUnit, t: u64, buf: &mut [u8]) {
    src.handle_timeout(t);
    while let Some(tx) = src.poll_transmit(t, buf) {
        if tx.dst == dst.id {
            dst.handle_datagram(t, &buf[..tx.len]);
        }
    }
    while src.poll_event().is_some() {}
}

/// A standby restarted and was given a transfer whose snapshot holds ops up to 5 (the client
/// acked 2). A late UPDATE of op 3 with its body, sent to the unit's earlier life before the
/// transfer, then arrives: applying it would write op 3's value over op 5's in the snapshot
/// (simulator seed 40161967: a key rolled back, and the next takeover's replay missed its
/// section). It is dropped and counted; the PREAPPLIED copy of the same op is taken.
#[test]
fn a_body_for_an_op_inside_the_transferred_snapshot_is_dropped() {
    let mut s = ControlUnit::new(config(), 2, false, 9, 0);
    let (section, key) = (3u8, 17u64);
    let mut buf = vec![0u8; 2048];
    let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, 1);
    assert!(fb.push(Kind::Heartbeat, &heartbeat(ROLE_PRIMARY, 0, 0b11, 0)));
    for channel in 0..2u32 {
        let stream = 50 + channel;
        let (base_op, acked_op, total) = if channel == 0 { (5, 2, 1) } else { (0, 0, 0) };
        let begin = BulkBegin {
            channel: channel.into(),
            stream: stream.into(),
            sections: u64::MAX.into(),
            base_op: base_op.into(),
            acked_op: acked_op.into(),
        };
        assert!(fb.push(Kind::XferBegin, &begin));
        if total == 1 {
            let value = b"op 5";
            let entry = BulkEntry {
                channel: channel.into(),
                stream: stream.into(),
                index: 0.into(),
                section,
                flags: 0,
                value_len: (value.len() as u16).into(),
                key: key.into(),
            };
            assert!(fb.push_tail(Kind::XferEntry, &entry, value));
        }
        let end = BulkEnd {
            channel: channel.into(),
            stream: stream.into(),
            total: total.into(),
            reserved: 0.into(),
            base_op: base_op.into(),
        };
        assert!(fb.push(Kind::XferEnd, &end));
    }
    let len = fb.finish();
    s.handle_datagram(1_000, &buf[..len]);
    assert_eq!(s.role(), Role::Standby, "the transfer completed");
    assert_eq!(s.preapplied_top(0), 5);
    let snapshot = |s: &ControlUnit| {
        s.state(0)
            .and_then(|st| st.get(section.into(), key))
            .map(<[u8]>::to_vec)
    };
    assert_eq!(snapshot(&s).as_deref(), Some(&b"op 5"[..]));

    let mut body = Vec::new();
    encode_entry(
        &mut body,
        &Entry {
            section,
            key,
            value: Some(b"op 3"),
            private: false,
        },
    );
    let cookie = 1u64 << section;
    let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, 2);
    assert!(fb.push_update(0, 0, 3, cookie, (&body, 1), (&[], 0)));
    // The client's ack of op 3 arrives with it: an op taken would apply at once.
    let ack = ChannelOp {
        channel: 0.into(),
        generation: 0.into(),
        op: 3.into(),
    };
    assert!(fb.push(Kind::FwdAck, &ack));
    let len = fb.finish();
    s.handle_datagram(2_000, &buf[..len]);
    assert_eq!(
        snapshot(&s).as_deref(),
        Some(&b"op 5"[..]),
        "the snapshot's value stays"
    );
    assert_eq!(s.counters.rejected_stale_update, 1);

    // The PREAPPLIED copy of op 3 (cookie only) is the one a standby of this life takes.
    let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, 3);
    assert!(fb.push_update(UPDATE_FLAG_PREAPPLIED, 0, 3, cookie, (&[], 0), (&[], 0)));
    let len = fb.finish();
    let rejected = s.counters.rejected();
    s.handle_datagram(3_000, &buf[..len]);
    assert_eq!(s.counters.rejected(), rejected);
    assert_eq!(snapshot(&s).as_deref(), Some(&b"op 5"[..]));
}

//! Which channels a primary replays to a client outside a failover (issue 9): a full replay
//! goes only to a channel whose client history is unknown, and every channel of a client
//! that restarted (a new boot ID). A client used to ask per client, so every channel of it
//! was replayed in full, in-sync ones too, on every heartbeat while any one was unknown.

use statesync::proto::SectionMask;
use statesync::proto::control::ControlUnit;
use statesync::proto::{ProtoConfig, Role, Topology};
use statesync::wire::{
    BulkAck, Entry, FrameBuilder, HeartbeatBody, Kind, LA_FLAG_UNKNOWN, LaReplyBody, ROLE_CLIENT,
};

const CLIENT: u32 = 100;

fn primary() -> ControlUnit {
    let cfg = ProtoConfig::new(Topology {
        control_units: vec![1, 2],
        clients: vec![CLIENT],
        channel_owner: vec![CLIENT, CLIENT],
        submitters: vec![],
    });
    let mut p = ControlUnit::new(cfg, 1, true, 7, 0);
    p.handle_timeout(1_000);
    assert_eq!(p.role(), Role::Primary);
    for key in 0..20u64 {
        let v = key.to_le_bytes();
        let e = Entry {
            section: (key % 4) as u8,
            key,
            value: Some(&v),
            private: false,
        };
        p.submit(2_000, (key % 2) as u32, &[e]).expect("room");
    }
    p
}

/// One frame of the client: a heartbeat with `boot`, then `unknown` channels' "no history"
/// answers and `done` finished-replay acks `(channel, stream)`.
fn client_frame(
    p: &mut ControlUnit,
    now_us: u64,
    seq: u64,
    boot: u32,
    unknown: &[u32],
    done: &[(u32, u32)],
) {
    let mut buf = vec![0u8; 512];
    let mut fb = FrameBuilder::new(&mut buf, CLIENT, p.epoch(), seq);
    let hb = HeartbeatBody {
        role: ROLE_CLIENT,
        flags: 0,
        sync_version: 0.into(),
        sync_mask: 0.into(),
        boot_or_target: boot.into(),
        vote: 0.into(),
        view_epoch: 0.into(),
    };
    assert!(fb.push(Kind::Heartbeat, &hb));
    for &ch in unknown {
        let r = LaReplyBody {
            channel: ch.into(),
            flags: LA_FLAG_UNKNOWN.into(),
            last_applied: 0.into(),
            cookie_above: SectionMask::ALL.get().into(),
            data_epoch: 0.into(),
        };
        assert!(fb.push(Kind::LaReply, &r));
    }
    for &(ch, stream) in done {
        let a = BulkAck {
            channel: ch.into(),
            stream: stream.into(),
            next_index: u32::MAX.into(),
            done: 1.into(),
        };
        assert!(fb.push(Kind::ReplayAck, &a));
    }
    let len = fb.finish();
    p.handle_datagram(now_us, &buf[..len]);
}

#[test]
fn an_unknown_channel_is_replayed_in_full_and_its_in_sync_sibling_is_not() {
    let mut p = primary();
    client_frame(&mut p, 3_000, 1, 5, &[], &[]);
    assert_eq!(
        p.counters.replays_started, 0,
        "a first heartbeat replays nothing"
    );
    client_frame(&mut p, 3_100, 2, 5, &[1], &[]);
    assert!(p.is_replaying(1) && !p.is_replaying(0));
    assert_eq!(p.counters.replays_started, 1);
    // Asked again while that replay runs: nothing new.
    client_frame(&mut p, 3_200, 3, 5, &[1], &[]);
    assert_eq!(p.counters.replays_started, 1);
}

#[test]
fn a_no_history_answer_older_than_the_finished_replay_is_stale() {
    let mut p = primary();
    client_frame(&mut p, 3_000, 1, 5, &[1], &[]);
    let (stream, _, _) = p.replay_progress(1).expect("replaying");
    client_frame(&mut p, 3_100, 10, 5, &[], &[(1, stream)]);
    assert!(!p.is_replaying(1), "the replay finished");
    // Sent before the replay finished, delivered after it.
    client_frame(&mut p, 3_200, 8, 5, &[1], &[]);
    assert!(!p.is_replaying(1));
    assert_eq!(p.counters.rejected_stale_unknown, 1);
    // Sent after: the client lost the channel's history again. Within a heartbeat interval
    // of the last replay's end it is held back (counted; the client asks again with every
    // heartbeat), then served.
    client_frame(&mut p, 3_300, 11, 5, &[1], &[]);
    assert!(!p.is_replaying(1));
    assert_eq!(p.counters.rejected_replay_rate, 1);
    let gap_us = p.config().heartbeat_interval_us;
    client_frame(&mut p, 3_100 + gap_us, 12, 5, &[1], &[]);
    assert!(p.is_replaying(1));
}

#[test]
fn a_new_life_of_the_client_is_replayed_in_full_on_every_channel() {
    let mut p = primary();
    client_frame(&mut p, 3_000, 1, 5, &[], &[]);
    assert!(!p.is_replaying(0) && !p.is_replaying(1));
    // Restarted (boot 6) and holding state from elsewhere: no channel says it is unknown.
    client_frame(&mut p, 3_100, 1, 6, &[], &[]);
    assert!(p.is_replaying(0) && p.is_replaying(1));
    assert_eq!(p.counters.replays_started, 2);
}

/// A new life of the client right after a full replay finished: the full replay it is owed is
/// held back for the pacer's pause (the new life may not ask for it: it may hold state from
/// elsewhere and believe it is in sync), then started by the primary's own timer.
#[test]
fn a_full_replay_owed_to_a_new_life_starts_once_the_pause_ends() {
    let mut p = primary();
    client_frame(&mut p, 3_000, 1, 5, &[1], &[]);
    let (stream, _, _) = p.replay_progress(1).expect("replaying");
    client_frame(&mut p, 3_100, 10, 5, &[], &[(1, stream)]);
    assert!(!p.is_replaying(1), "the replay finished");
    client_frame(&mut p, 3_200, 1, 6, &[], &[]);
    assert!(!p.is_replaying(1), "held back");
    assert!(p.is_replaying(0), "channel 0 had no replay to pause after");
    assert_eq!(p.counters.rejected_replay_rate, 1);
    // The primary's timer ticks: the replay starts at the first tick past the pause.
    let (gap_us, tick_us) = (p.config().heartbeat_interval_us, p.config().tick_us);
    let mut t = 3_200;
    while !p.is_replaying(1) && t < 3_100 + gap_us + 2 * tick_us {
        p.handle_timeout(t);
        assert!(t >= 3_100 + gap_us || !p.is_replaying(1), "started at {t}");
        t += 100;
    }
    assert!(p.is_replaying(1), "the owed replay started");
}

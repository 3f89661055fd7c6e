//! Loopback tests of the whole transport, run against each backend explicitly.
//!
//! io_uring tests are *ignored* where the build-time probe (`build.rs`) found no io_uring, and
//! IPv6 tests where there is no IPv6 loopback; `STATESYNC_REQUIRE_URING=1` makes them run (and
//! fail) instead. A test that runs never skips itself. Nothing here asserts timing;
//! waits are generous deadlines that only matter when something is broken.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn local(io: IoChoice) -> TransportConfig {
    TransportConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        io,
        ..Default::default()
    }
}

/// Opens `cfg`. Tests that need io_uring are ignored where the build found none, so a
/// missing backend here is a failure, never a skip.
fn open(cfg: TransportConfig) -> Transport {
    let io = cfg.io;
    Transport::open_with(cfg, false).unwrap_or_else(|e| panic!("open ({io:?}) failed: {e}"))
}

type Got = Vec<(SocketAddr, Vec<u8>)>;

/// One `#[test]` per backend running `body(io)`: the io_uring one is ignored (with the reason)
/// where the build-time probe found no io_uring.
macro_rules! per_backend {
    ($body:ident => $mmsg:ident, $uring:ident) => {
        #[test]
        fn $mmsg() {
            $body(IoChoice::Mmsg);
        }

        #[test]
        #[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
        fn $uring() {
            $body(IoChoice::Uring);
        }
    };
}

/// Polls until `want` datagrams in total are in `out`, or 2 s pass.
fn recv_until(t: &mut Transport, want: usize, out: &mut Got) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while out.len() < want && Instant::now() < deadline {
        t.poll_recv(Some(Duration::from_millis(50)), &mut |src, d| {
            out.push((src, d.to_vec()))
        })
        .unwrap();
    }
}

fn echo(io: IoChoice, bind: &str) {
    let mut cfg = local(io);
    cfg.bind = bind.parse().unwrap();
    let mut a = open(cfg.clone());
    let mut b = open(cfg);
    let expect = match io {
        IoChoice::Uring => IoKind::Uring,
        _ => IoKind::Mmsg,
    };
    assert_eq!((a.kind(), b.kind()), (expect, expect));
    for i in 0..10u8 {
        let slot = a.tx_slot().unwrap();
        slot[..5].copy_from_slice(&[b'p', b'i', b'n', b'g', i]);
        a.tx_commit(5, b.local_addr());
    }
    assert_eq!(a.flush().unwrap(), 10);
    let mut got = Got::new();
    recv_until(&mut b, 10, &mut got);
    assert_eq!(got.len(), 10);
    for (src, d) in &got {
        assert_eq!(*src, a.local_addr());
        let mut reply = d.clone();
        reply[..4].copy_from_slice(b"pong");
        b.queue(&reply, *src).unwrap();
    }
    assert_eq!(b.flush().unwrap(), 10);
    let mut back = Got::new();
    recv_until(&mut a, 10, &mut back);
    let mut ids: Vec<u8> = back.iter().map(|(_, d)| d[4]).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    assert!(
        back.iter()
            .all(|(src, d)| *src == b.local_addr() && &d[..4] == b"pong")
    );
    let s = a.stats();
    assert_eq!((s.datagrams_sent, s.datagrams_received), (10, 10));
    assert_eq!((s.bytes_sent, s.bytes_received), (50, 50));
}

#[test]
fn echo_mmsg() {
    echo(IoChoice::Mmsg, "127.0.0.1:0");
}

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn echo_uring() {
    echo(IoChoice::Uring, "127.0.0.1:0");
}

#[test]
#[cfg_attr(not(statesync_ipv6), ignore = "no IPv6 loopback on this host")]
fn echo_ipv6_mmsg() {
    echo(IoChoice::Mmsg, "[::1]:0");
}

#[test]
#[cfg_attr(not(statesync_ipv6), ignore = "no IPv6 loopback on this host")]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn echo_ipv6_uring() {
    echo(IoChoice::Uring, "[::1]:0");
}

fn dual_stack_socket_talks_to_ipv4_peer(io: IoChoice) {
    let mut cfg = local(io);
    cfg.bind = "[::]:0".parse().unwrap();
    let mut v6 = open(cfg);
    let mut v4 = open(local(io));
    v6.queue(b"hello", v4.local_addr()).unwrap();
    assert_eq!(v6.flush().unwrap(), 1);
    let mut got = Got::new();
    recv_until(&mut v4, 1, &mut got);
    assert_eq!(got.len(), 1, "{io}");
    let from = got[0].0;
    assert!(
        from.is_ipv4() && from.port() == v6.local_addr().port(),
        "{from}"
    );
    // Replying to the IPv4 source reaches the dual-stack socket, which sees an IPv4 peer.
    v4.queue(b"back", from).unwrap();
    v4.flush().unwrap();
    let mut back = Got::new();
    recv_until(&mut v6, 1, &mut back);
    assert_eq!(back, vec![(v4.local_addr(), b"back".to_vec())], "{io}");
}

#[test]
#[cfg_attr(not(statesync_ipv6), ignore = "no IPv6 loopback on this host")]
fn dual_stack_socket_talks_to_ipv4_peer_mmsg() {
    dual_stack_socket_talks_to_ipv4_peer(IoChoice::Mmsg);
}

#[test]
#[cfg_attr(not(statesync_ipv6), ignore = "no IPv6 loopback on this host")]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn dual_stack_socket_talks_to_ipv4_peer_uring() {
    dual_stack_socket_talks_to_ipv4_peer(IoChoice::Uring);
}

/// Size of datagram `seq` in the batch tests: runs of equal sizes (so GSO has trains to form),
/// mixed with odd sizes, up to 16 KiB.
fn size_of_seq(seq: u32) -> usize {
    const SIZES: [usize; 8] = [8, 1472, 100, 16_384, 1472, 999, 8_000, 9];
    SIZES[(seq / 13) as usize % SIZES.len()] - (seq % 13 == 12 && seq.is_multiple_of(2)) as usize
}

fn fill(seq: u32, buf: &mut [u8]) {
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    for (j, b) in buf[4..].iter_mut().enumerate() {
        *b = (seq as usize * 31 + j) as u8;
    }
}

/// Sends 400 datagrams of varying sizes in batches and checks every one arrives once, intact.
fn batch_intact(io: IoChoice, gso: bool, gro: bool) {
    let mut scfg = local(io);
    scfg.max_datagram_bytes = 16_384;
    scfg.gso = gso;
    let mut rcfg = scfg.clone();
    rcfg.gro = gro;
    let mut tx = open(scfg);
    let mut rx = open(rcfg);
    let dst = rx.local_addr();
    let n = 400u32;
    let mut got = Got::new();
    let mut seq = 0;
    while seq < n {
        while seq < n {
            let Some(slot) = tx.tx_slot() else { break };
            let len = size_of_seq(seq);
            fill(seq, &mut slot[..len]);
            tx.tx_commit(len, dst);
            seq += 1;
        }
        tx.flush().unwrap();
        recv_until(&mut rx, seq as usize, &mut got);
    }
    let mut seen = BTreeMap::new();
    for (src, d) in &got {
        assert_eq!(*src, tx.local_addr());
        let s = u32::from_le_bytes(d[..4].try_into().unwrap());
        assert_eq!(d.len(), size_of_seq(s), "length of datagram {s}");
        let mut want = vec![0; d.len()];
        fill(s, &mut want);
        assert!(*d == want, "content of datagram {s}");
        *seen.entry(s).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n as usize, "every datagram arrived");
    assert!(seen.values().all(|&c| c == 1), "none twice");
    let (ts, rs) = (tx.stats(), rx.stats());
    assert_eq!(ts.datagrams_sent, u64::from(n));
    assert_eq!(rs.datagrams_received, u64::from(n));
    assert_eq!(ts.send_errors + ts.send_eagain + ts.send_enobufs, 0);
    if !gso {
        assert_eq!(ts.gso_sends, 0);
    } else if tx.gso_enabled() {
        assert!(ts.gso_sends > 0, "{ts:?}");
        // Fewer kernel sends than datagrams is the point of batching; the exact number depends
        // on train boundaries.
        assert!(ts.send_syscalls < u64::from(n) / 8, "{ts:?}");
    }
    if !gro {
        assert_eq!(rs.gro_receives, 0);
    }
}

#[test]
fn batch_intact_mmsg_plain() {
    batch_intact(IoChoice::Mmsg, false, false);
}

#[test]
fn batch_intact_mmsg_gso_gro() {
    batch_intact(IoChoice::Mmsg, true, true);
}

#[test]
fn batch_intact_mmsg_gso_to_non_gro_receiver() {
    batch_intact(IoChoice::Mmsg, true, false);
}

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn batch_intact_uring_plain() {
    batch_intact(IoChoice::Uring, false, false);
}

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn batch_intact_uring_gso_gro() {
    batch_intact(IoChoice::Uring, true, true);
}

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn batch_intact_uring_gso_to_non_gro_receiver() {
    batch_intact(IoChoice::Uring, true, false);
}

/// A GSO train to a GRO receiver on loopback arrives as one coalesced buffer, which must be
/// split back into the original datagrams.
fn gro_splits_trains(io: IoChoice) {
    let mut tx = open(local(io));
    let mut rx = open(local(io));
    for i in 0..40u32 {
        let slot = tx.tx_slot().unwrap();
        fill(i, &mut slot[..1000]);
        tx.tx_commit(if i == 39 { 600 } else { 1000 }, rx.local_addr());
    }
    assert_eq!(tx.flush().unwrap(), 40);
    let mut got = Got::new();
    recv_until(&mut rx, 40, &mut got);
    assert_eq!(got.len(), 40);
    for (i, (_, d)) in got.iter().enumerate() {
        let mut want = vec![0; 1000];
        fill(i as u32, &mut want);
        want.truncate(if i == 39 { 600 } else { 1000 });
        assert!(*d == want, "datagram {i} in order and intact");
    }
    if tx.gso_enabled() && rx.gro_enabled() {
        assert_eq!(tx.stats().gso_sends, 1, "{:?}", tx.stats());
        assert!(rx.stats().gro_receives >= 1, "{:?}", rx.stats());
    } else {
        eprintln!("GSO/GRO unsupported here; checked plain delivery only");
    }
}

per_backend!(gro_splits_trains => gro_splits_trains_mmsg, gro_splits_trains_uring);

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn backends_interoperate() {
    let mut u = open(local(IoChoice::Uring));
    let mut m = open(local(IoChoice::Mmsg));
    for i in 0..100u32 {
        u.queue(&i.to_le_bytes(), m.local_addr()).unwrap();
        m.queue(&i.to_le_bytes(), u.local_addr()).unwrap();
    }
    u.flush().unwrap();
    m.flush().unwrap();
    let (mut gu, mut gm) = (Got::new(), Got::new());
    recv_until(&mut u, 100, &mut gu);
    recv_until(&mut m, 100, &mut gm);
    assert_eq!((gu.len(), gm.len()), (100, 100));
}

fn truncated_is_counted(io: IoChoice) {
    let mut scfg = local(io);
    scfg.max_datagram_bytes = 2000;
    let mut rcfg = local(io);
    rcfg.max_datagram_bytes = 1000;
    rcfg.gro = false;
    let mut tx = open(scfg);
    let mut rx = open(rcfg);
    tx.queue(&[1; 1500], rx.local_addr()).unwrap();
    tx.queue(&[2; 500], rx.local_addr()).unwrap();
    tx.flush().unwrap();
    let mut got = Got::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while rx.stats().recv_truncated + (got.len() as u64) < 2 && Instant::now() < deadline {
        rx.poll_recv(Some(Duration::from_millis(50)), &mut |s, d| {
            got.push((s, d.to_vec()))
        })
        .unwrap();
    }
    assert_eq!(got, vec![(tx.local_addr(), vec![2; 500])]);
    assert_eq!(rx.stats().recv_truncated, 1);
}

per_backend!(truncated_is_counted => truncated_is_counted_mmsg, truncated_is_counted_uring);

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn uring_rearms_after_buffer_ring_runs_dry() {
    let mut rcfg = local(IoChoice::Uring);
    rcfg.rx_buffers = 4;
    rcfg.gro = false;
    let mut rx = open(rcfg);
    let mut tx = open(local(IoChoice::Mmsg));
    // Arm the receive first, so all 64 datagrams hit a ring of only 4 buffers.
    rx.poll_recv(None, &mut |_, _| {}).unwrap();
    for i in 0..64u32 {
        tx.queue(&i.to_le_bytes(), rx.local_addr()).unwrap();
    }
    assert_eq!(tx.flush().unwrap(), 64);
    let mut got = Got::new();
    recv_until(&mut rx, 64, &mut got);
    assert_eq!(got.len(), 64, "{:?}", rx.stats());
    let s = rx.stats();
    assert!(s.recv_buffers_exhausted >= 1 && s.recv_rearms >= 2, "{s:?}");
}

fn poll_without_timeout_does_not_block(io: IoChoice) {
    let mut t = open(local(io));
    for _ in 0..3 {
        assert_eq!(
            t.poll_recv(None, &mut |_, _| panic!("nothing was sent"))
                .unwrap(),
            0
        );
        assert_eq!(
            t.poll_recv(Some(Duration::ZERO), &mut |_, _| {}).unwrap(),
            0
        );
    }
    // A short timed wait with nothing to receive returns empty, without error.
    assert_eq!(
        t.poll_recv(Some(Duration::from_millis(2)), &mut |_, _| {})
            .unwrap(),
        0
    );
}

per_backend!(poll_without_timeout_does_not_block => poll_without_timeout_does_not_block_mmsg, poll_without_timeout_does_not_block_uring);

fn one_send_syscall_per_batch(io: IoChoice) {
    let mut cfg = local(io);
    cfg.gso = false;
    let mut tx = open(cfg);
    let mut rx = open(local(IoChoice::Mmsg));
    tx.queue(b"warm", rx.local_addr()).unwrap();
    tx.flush().unwrap();
    let before = tx.stats().send_syscalls;
    while tx.tx_slot().is_some() {
        tx.tx_commit(8, rx.local_addr());
    }
    assert_eq!(tx.flush().unwrap(), 64);
    assert_eq!(tx.stats().send_syscalls - before, 1, "{io}");
    let mut got = Got::new();
    recv_until(&mut rx, 65, &mut got);
    assert_eq!(got.len(), 65);
}

per_backend!(one_send_syscall_per_batch => one_send_syscall_per_batch_mmsg, one_send_syscall_per_batch_uring);

fn faults_over_loopback(io: IoChoice) -> (FaultStats, u64) {
    let mut scfg = local(io);
    scfg.faults = FaultConfig {
        drop: 0.2,
        duplicate: 0.1,
        reorder: 0.1,
        seed: 5,
        ..Default::default()
    };
    let mut tx = open(scfg);
    let mut rx = open(local(io));
    let mut got = Got::new();
    for i in 0..500u32 {
        tx.queue(&i.to_le_bytes(), rx.local_addr()).unwrap();
        if tx.tx_pending() == 64 {
            tx.flush().unwrap();
        }
    }
    tx.flush().unwrap();
    tx.flush().unwrap(); // releases a reordered datagram held by the last batch
    let sent = tx.stats().datagrams_sent;
    recv_until(&mut rx, sent as usize, &mut got);
    assert_eq!(got.len() as u64, sent);
    let f = tx.stats().faults;
    assert_eq!(sent, 500 - f.dropped + f.duplicated);
    (f, sent)
}

#[test]
fn fault_layer_on_both_backends_is_deterministic() {
    let m = faults_over_loopback(IoChoice::Mmsg);
    let m2 = faults_over_loopback(IoChoice::Mmsg);
    assert_eq!(m, m2, "same seed, same faults");
    let f = m.0;
    assert!((70..130).contains(&f.dropped), "{f:?}");
    assert!((25..75).contains(&f.duplicated), "{f:?}");
    assert!((25..75).contains(&f.reordered), "{f:?}");
}

#[test]
#[cfg_attr(not(statesync_uring), ignore = "io_uring unavailable on this host")]
fn fault_layer_does_not_depend_on_the_backend() {
    assert_eq!(
        faults_over_loopback(IoChoice::Uring),
        faults_over_loopback(IoChoice::Mmsg)
    );
}

#[test]
fn delayed_datagrams_are_sent_by_a_later_poll() {
    let mut scfg = local(IoChoice::Mmsg);
    scfg.faults = FaultConfig {
        delay: 1.0,
        delay_us: 3_000,
        seed: 1,
        ..Default::default()
    };
    let mut tx = open(scfg);
    let mut rx = open(local(IoChoice::Mmsg));
    tx.queue(b"late", rx.local_addr()).unwrap();
    assert_eq!(tx.flush().unwrap(), 0, "held back");
    assert!(tx.next_fault_release().is_some());
    let deadline = Instant::now() + Duration::from_secs(2);
    while tx.next_fault_release().is_some() && Instant::now() < deadline {
        tx.poll_recv(Some(Duration::from_millis(20)), &mut |_, _| {})
            .unwrap();
    }
    let mut got = Got::new();
    recv_until(&mut rx, 1, &mut got);
    assert_eq!(got, vec![(tx.local_addr(), b"late".to_vec())]);
    assert_eq!(tx.stats().faults.delayed, 1);
}

#[test]
fn auto_falls_back_when_uring_is_disabled() {
    let t = Transport::open_with(local(IoChoice::Auto), true).unwrap();
    assert_eq!(t.kind(), IoKind::Mmsg);
    let e = Transport::open_with(local(IoChoice::Uring), true).unwrap_err();
    assert!(
        matches!(e, TransportError::UringUnavailable(ref why) if why.contains(NO_URING_ENV)),
        "{e}"
    );
    // Without the override, Auto picks whatever works here, and works.
    let mut a = Transport::open_with(local(IoChoice::Auto), false).unwrap();
    a.queue(b"x", a.local_addr()).unwrap();
    a.flush().unwrap();
    let mut got = Got::new();
    recv_until(&mut a, 1, &mut got);
    assert_eq!(got.len(), 1, "{}", a.kind());
}

#[test]
fn env_override_values() {
    assert!(!no_uring_requested(None));
    assert!(!no_uring_requested(Some(OsStr::new(""))));
    assert!(!no_uring_requested(Some(OsStr::new("0"))));
    assert!(no_uring_requested(Some(OsStr::new("1"))));
    assert!(no_uring_requested(Some(OsStr::new("yes"))));
}

#[test]
fn io_choice_parses_and_displays() {
    for c in [IoChoice::Auto, IoChoice::Uring, IoChoice::Mmsg] {
        assert_eq!(c.to_string().parse::<IoChoice>(), Ok(c));
    }
    assert_eq!("URING".parse::<IoChoice>(), Ok(IoChoice::Uring));
    assert!("epoll".parse::<IoChoice>().is_err());
    assert_eq!(IoKind::Uring.to_string(), "uring");
    assert_eq!(IoKind::Mmsg.to_string(), "mmsg");
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut TransportConfig)| {
        let mut c = local(IoChoice::Mmsg);
        f(&mut c);
        matches!(
            Transport::open_with(c, false),
            Err(TransportError::Config(_))
        )
    };
    assert!(bad(|c| c.batch = 0));
    assert!(bad(|c| c.batch = 5000));
    assert!(bad(|c| c.max_datagram_bytes = 0));
    assert!(bad(|c| c.max_datagram_bytes = 70_000));
    assert!(bad(|c| c.rx_buffers = 1 << 16));
}

#[test]
fn slots_run_out_and_queue_flushes() {
    let mut cfg = local(IoChoice::Mmsg);
    cfg.batch = 4;
    let mut tx = open(cfg);
    let mut rx = open(local(IoChoice::Mmsg));
    for _ in 0..4 {
        assert_eq!(tx.tx_slot().map(|s| s.len()), Some(1472));
        tx.tx_commit(1, rx.local_addr());
    }
    assert!(tx.tx_slot().is_none());
    tx.queue(b"fifth", rx.local_addr()).unwrap(); // flushes the first four
    assert_eq!(tx.tx_pending(), 1);
    assert!(matches!(
        tx.queue(&[0; 1473], rx.local_addr()),
        Err(TransportError::TooLarge {
            len: 1473,
            max: 1472
        })
    ));
    assert_eq!(tx.flush().unwrap(), 1);
    let mut got = Got::new();
    recv_until(&mut rx, 5, &mut got);
    assert_eq!(got.len(), 5);
}

/// Regression: a receive that fills exactly one batch must not then sleep out the timeout
/// waiting for more. Counted in syscalls, not time: the drain needs a full `recvmmsg` and one
/// that finds the socket empty, and no `ppoll`.
#[test]
fn full_batch_does_not_wait_for_more() {
    let mut cfg = local(IoChoice::Mmsg);
    cfg.gso = false;
    cfg.gro = false;
    let mut tx = open(cfg.clone());
    let mut rx = open(cfg);
    while tx.tx_slot().is_some() {
        tx.tx_commit(100, rx.local_addr());
    }
    assert_eq!(tx.flush().unwrap(), 64);
    let before = rx.stats().recv_syscalls;
    let n = rx
        .poll_recv(Some(Duration::from_secs(10)), &mut |_, _| {})
        .unwrap();
    assert_eq!(n, 64);
    assert_eq!(rx.stats().recv_syscalls - before, 2);
}

/// The event loop may open its transport on one thread and move it to its own.
#[test]
fn transport_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Transport>();
}

/// The runtime's lifecycle: open on one thread, run on a worker thread, drop back on the first.
/// With io_uring the ring binds to the worker at first use; dropping elsewhere must neither hang
/// nor fail.
fn open_here_use_there_drop_here(io: IoChoice) {
    let mut a = open(local(io));
    let mut b = open(local(io));
    let (a, b) = std::thread::spawn(move || {
        a.queue(b"over there", b.local_addr()).unwrap();
        assert_eq!(a.flush().unwrap(), 1);
        let mut got = Got::new();
        recv_until(&mut b, 1, &mut got);
        assert_eq!(got.len(), 1);
        (a, b)
    })
    .join()
    .unwrap();
    drop((a, b));
}

per_backend!(open_here_use_there_drop_here => open_here_use_there_drop_here_mmsg, open_here_use_there_drop_here_uring);

/// Loopback delivers inside the sender's `flush`: a non-waiting poll right after must see the
/// datagram. The event loop relies on it to carry an op from primary to client to standby
/// within one turn; with io_uring the poll must run the receive work the kernel deferred.
fn immediate_poll_sees_flushed(io: IoChoice) {
    let mut a = open(local(io));
    let mut b = open(local(io));
    let mut got: Got = Vec::new();
    // The first poll arms the receive.
    b.poll_recv(None, &mut |src, d| got.push((src, d.to_vec())))
        .unwrap();
    for round in 0..20u8 {
        let slot = a.tx_slot().unwrap();
        slot[0] = round;
        a.tx_commit(1, b.local_addr());
        a.flush().unwrap();
        got.clear();
        b.poll_recv(None, &mut |src, d| got.push((src, d.to_vec())))
            .unwrap();
        assert_eq!(got.len(), 1, "round {round}: flushed datagram not visible");
        assert_eq!(got[0].1, vec![round]);
    }
}

per_backend!(immediate_poll_sees_flushed => immediate_poll_sees_flushed_mmsg, immediate_poll_sees_flushed_uring);

/// A burst larger than one multishot round (and than the provided-buffer ring) is all visible
/// to one poll: the tail of a turn's traffic must not wait for the next turn.
fn one_poll_takes_a_whole_burst(io: IoChoice) {
    const BURST: usize = 100;
    const BYTES: usize = 16_384;
    // `churn`'s loopback settings: large datagrams, no GRO.
    let cfg = TransportConfig {
        max_datagram_bytes: BYTES,
        sndbuf_bytes: 8 << 20,
        rcvbuf_bytes: 8 << 20,
        gro: false,
        ..local(io)
    };
    let mut a = open(cfg.clone());
    let mut b = open(cfg);
    let mut got: Got = Vec::new();
    b.poll_recv(None, &mut |src, d| got.push((src, d.to_vec())))
        .unwrap();
    for i in 0..BURST {
        let slot = match a.tx_slot() {
            Some(s) => s,
            None => {
                a.flush().unwrap();
                a.tx_slot().unwrap()
            }
        };
        slot[..2].copy_from_slice(&(i as u16).to_le_bytes());
        a.tx_commit(BYTES, b.local_addr());
    }
    a.flush().unwrap();
    got.clear();
    b.poll_recv(None, &mut |src, d| got.push((src, d.to_vec())))
        .unwrap();
    assert_eq!(got.len(), BURST, "one poll saw only part of the burst");
    for (i, (_, d)) in got.iter().enumerate() {
        assert_eq!(d.len(), BYTES);
        assert_eq!(d[..2], (i as u16).to_le_bytes(), "in order");
    }
}

per_backend!(one_poll_takes_a_whole_burst => one_poll_takes_a_whole_burst_mmsg, one_poll_takes_a_whole_burst_uring);

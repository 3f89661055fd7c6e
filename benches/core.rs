//! Criterion benches for the per-change costs: frame encode/decode, the pending ring with
//! cumulative-ack matching, state apply, and the whole sans-IO fabric in process (primary,
//! standby and client exchanging real frames through memory, no sockets).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use statesync::proto::ring::OpRing;
use statesync::proto::state::ChannelState;
use statesync::proto::{Client, ControlUnit, OpId, ProtoConfig, Topology};
use statesync::wire::{Entry, FrameBuilder, FrameReader, Msg, encode_entry};
use std::hint::black_box;

/// The `statesync` binary's allocator, so the large working sets land on huge pages here too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VALUE: [u8; 32] = [7u8; 32];

fn encoded_entry(key: u64) -> Vec<u8> {
    let mut v = Vec::new();
    encode_entry(
        &mut v,
        &Entry {
            section: (key % 64) as u8,
            key,
            value: Some(&VALUE),
            private: false,
        },
    );
    v
}

fn codec(c: &mut Criterion) {
    let entry = encoded_entry(42);
    let mut buf = vec![0u8; 65_507];
    let mut g = c.benchmark_group("codec");
    // Updates per 64 KiB frame.
    let per_frame = {
        let mut fb = FrameBuilder::new(&mut buf, 1, 256, 1);
        let mut n = 0u64;
        while fb.push_update(0, 3, n + 1, 1, (&entry, 1), (&[], 0)) {
            n += 1;
        }
        fb.finish();
        n
    };
    g.throughput(Throughput::Elements(per_frame));
    g.bench_function("encode_updates_64k_frame", |b| {
        b.iter(|| {
            let mut fb = FrameBuilder::new(&mut buf, 1, 256, 1);
            for op in 1..=per_frame {
                fb.push_update(0, 3, op, 1, (&entry, 1), (&[], 0));
            }
            black_box(fb.finish())
        })
    });
    let len = {
        let mut fb = FrameBuilder::new(&mut buf, 1, 256, 1);
        for op in 1..=per_frame {
            fb.push_update(0, 3, op, 1, (&entry, 1), (&[], 0));
        }
        fb.finish()
    };
    let frame = buf[..len].to_vec();
    g.bench_function("decode_updates_64k_frame", |b| {
        b.iter(|| {
            let f = FrameReader::new(black_box(&frame)).expect("valid");
            let mut sum = 0u64;
            for m in f.msgs() {
                if let Msg::Update(u) = m {
                    sum += u.op() + u.entries().count() as u64;
                }
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn ring(c: &mut Criterion) {
    let entries = [Entry {
        section: 1,
        key: 9,
        value: Some(&VALUE),
        private: false,
    }];
    let mut g = c.benchmark_group("pending_ring");
    const N: u64 = 4096;
    g.throughput(Throughput::Elements(N));
    g.bench_function("insert_then_cumulative_ack_every_64", |b| {
        let mut r = OpRing::new(N as usize);
        let mut next = 1u64;
        b.iter(|| {
            for _ in 0..N {
                r.push_entries(OpId::new(next), &entries);
                if next.is_multiple_of(64) {
                    // A cumulative ack settles 64 ops with one pointer move.
                    let s = r.get(OpId::new(next)).expect("held");
                    black_box(s.cookie);
                    r.prune_through(OpId::new(next));
                }
                next += 1;
            }
        })
    });
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_apply");
    for keys in [1u64 << 10, 1 << 20] {
        g.throughput(Throughput::Elements(1024));
        g.bench_function(format!("put_32B_over_{keys}_keys"), |b| {
            let mut s = ChannelState::default();
            for k in 0..keys {
                s.put((k % 64) as usize, k, &VALUE);
            }
            let mut k = 0x1234_5678u64;
            b.iter(|| {
                for _ in 0..1024 {
                    k = k
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let key = (k >> 20) % keys;
                    s.put((key % 64) as usize, key, &VALUE);
                }
            })
        });
    }
    g.finish();

    // Our load: 1 Mi keys over 64 channels x 64 sections; key k lives in channel k % 64,
    // section (k / 64) % 64. All keys are pre-populated, so every measured put is an overwrite
    // of a random key (cache and TLB miss bound). `prefetch_16` prefetches each batch of 16
    // upcoming keys, then applies the batch, so the misses overlap.
    const CHANNELS: u64 = 64;
    const BATCH: usize = 16;
    let keys = 1u64 << 20;
    let mut chans: Vec<ChannelState> = (0..CHANNELS).map(|_| ChannelState::default()).collect();
    for k in 0..keys {
        chans[(k % CHANNELS) as usize].put(((k / CHANNELS) % 64) as usize, k, &VALUE);
    }
    let mut g = c.benchmark_group("state_apply_64ch");
    g.throughput(Throughput::Elements(1024));
    for prefetch in [false, true] {
        let name = if prefetch {
            format!("put_32B_over_{keys}_keys_prefetch_16")
        } else {
            format!("put_32B_over_{keys}_keys")
        };
        let mut k = 0x1234_5678u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..1024 / BATCH {
                    let mut batch = [0u64; BATCH];
                    for slot in &mut batch {
                        k = k
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        *slot = (k >> 20) % keys;
                    }
                    if prefetch {
                        for &key in &batch {
                            chans[(key % CHANNELS) as usize]
                                .prefetch(((key / CHANNELS) % 64) as usize, key);
                        }
                    }
                    for &key in &batch {
                        chans[(key % CHANNELS) as usize].put(
                            ((key / CHANNELS) % 64) as usize,
                            key,
                            &VALUE,
                        );
                    }
                }
            })
        });
    }
    g.finish();
}

/// Primary, standby and one client over in-memory frames: submit N changes, deliver until all
/// commit. Measures the protocol's CPU cost per change end to end, without the kernel.
fn end_to_end(c: &mut Criterion) {
    let topo = Topology {
        control_units: vec![1, 2],
        clients: vec![100],
        channel_owner: vec![100; 4],
        submitters: vec![],
    };
    let mut cfg = ProtoConfig::new(topo);
    cfg.window_ops = 8192;
    cfg.max_frame_bytes = 65_507;
    cfg.client_apply_events = false;
    const N: u64 = 4096;
    let mut g = c.benchmark_group("in_process");
    g.throughput(Throughput::Elements(N));
    g.bench_function("submit_replicate_commit_4096", |b| {
        b.iter_batched(
            || {
                (
                    ControlUnit::new(cfg.clone(), 1, true, 0, 0),
                    ControlUnit::new(cfg.clone(), 2, true, 0, 0),
                    Client::new(cfg.clone(), 100, false, 0, 0),
                )
            },
            |(mut p, mut s, mut cl)| {
                let mut buf = vec![0u8; 65_507];
                for i in 0..N {
                    let e = [Entry {
                        section: (i % 64) as u8,
                        key: i % 1000,
                        value: Some(&VALUE),
                        private: false,
                    }];
                    p.submit(1, (i % 4) as u32, &e)
                        .expect("window is large enough");
                }
                for round in 0..64u64 {
                    let now = 10 + round;
                    while let Some(t) = p.poll_transmit(now, &mut buf) {
                        match t.dst {
                            2 => s.handle_datagram(now, &buf[..t.len]),
                            _ => cl.handle_datagram(now, &buf[..t.len]),
                        }
                    }
                    while let Some(t) = cl.poll_transmit(now, &mut buf) {
                        p.handle_datagram(now, &buf[..t.len]);
                    }
                    while let Some(t) = s.poll_transmit(now, &mut buf) {
                        p.handle_datagram(now, &buf[..t.len]);
                    }
                    while p.poll_event().is_some() {}
                    while s.poll_event().is_some() {}
                    while cl.poll_event().is_some() {}
                    if (0..4).all(|ch| p.commit_watermark(ch) == p.next_op(ch) - 1) {
                        break;
                    }
                }
                assert!(
                    (0..4).all(|ch| p.commit_watermark(ch) == p.next_op(ch) - 1),
                    "all committed"
                );
                black_box((p, s, cl))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// One round trip of the in-process fabric: the primary's frames go to the standby and the
/// clients, their replies come back, until nothing is left to send. Returns when every channel
/// has committed all it was given, or after 64 rounds.
fn deliver_until_committed(
    p: &mut ControlUnit,
    s: &mut ControlUnit,
    clients: &mut [Client],
    buf: &mut [u8],
    now: u64,
) {
    let channels = p.config().topology.channels() as u32;
    for round in 0..64u64 {
        let now = now + round;
        while let Some(t) = p.poll_transmit(now, buf) {
            if t.dst == s.id {
                s.handle_datagram(now, &buf[..t.len]);
            } else if let Some(c) = clients.iter_mut().find(|c| c.id == t.dst) {
                c.handle_datagram(now, &buf[..t.len]);
            }
        }
        for c in clients.iter_mut() {
            while let Some(t) = c.poll_transmit(now, buf) {
                p.handle_datagram(now, &buf[..t.len]);
            }
        }
        // Forwarded acks reach the standby, whose commits come back.
        while let Some(t) = p.poll_transmit(now, buf) {
            if t.dst == s.id {
                s.handle_datagram(now, &buf[..t.len]);
            }
        }
        while let Some(t) = s.poll_transmit(now, buf) {
            p.handle_datagram(now, &buf[..t.len]);
        }
        while p.poll_event().is_some() {}
        while s.poll_event().is_some() {}
        for c in clients.iter_mut() {
            while c.poll_event().is_some() {}
        }
        if (0..channels).all(|ch| p.commit_watermark(ch) == p.next_op(ch) - 1) {
            return;
        }
    }
    panic!("not everything committed within 64 rounds");
}

/// `churn`'s working set in process: 1 Mi keys over 64 channels and two clients, prefilled,
/// then 4,096 changes to random keys per iteration, replicated and committed through real
/// frames in memory. Every write misses the caches, as in `churn`, but without the kernel or
/// the scheduler, so layout changes can be compared on a noisy machine.
fn end_to_end_churn_set(c: &mut Criterion) {
    const CHANNELS: u64 = 64;
    const KEYS: u64 = 1 << 20;
    const N: u64 = 4096;
    let topo = Topology {
        control_units: vec![1, 2],
        clients: vec![100, 101],
        channel_owner: (0..CHANNELS)
            .map(|ch| if ch < 32 { 100 } else { 101 })
            .collect(),
        submitters: vec![],
    };
    let mut cfg = ProtoConfig::new(topo);
    cfg.window_ops = 8192;
    cfg.max_frame_bytes = 16_384;
    cfg.client_apply_events = false;
    cfg.standby_apply_events = false;
    let mut p = ControlUnit::new(cfg.clone(), 1, true, 0, 0);
    let mut s = ControlUnit::new(cfg.clone(), 2, true, 0, 0);
    let mut clients = vec![
        Client::new(cfg.clone(), 100, false, 0, 0),
        Client::new(cfg.clone(), 101, false, 0, 0),
    ];
    let mut buf = vec![0u8; 16_384];
    let mut now = 10;
    let entry = |key: u64| Entry {
        section: ((key / CHANNELS) % 64) as u8,
        key,
        value: Some(&VALUE),
        private: false,
    };
    for chunk in 0..KEYS / N {
        for key in chunk * N..(chunk + 1) * N {
            p.submit(now, (key % CHANNELS) as u32, &[entry(key)])
                .expect("window is large enough");
        }
        deliver_until_committed(&mut p, &mut s, &mut clients, &mut buf, now);
        now += 100;
    }
    let mut k = 0x1234_5678u64;
    let mut keys = vec![0u64; N as usize];
    let mut step = || {
        for key in keys.iter_mut() {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *key = (k >> 20) % KEYS;
        }
        // As the runtime's workers submit: in a batch, prefetching ahead.
        let change = |i: usize| ((keys[i] % CHANNELS) as u32, entry(keys[i]));
        let taken = p.submit_batch(now, keys.len(), change, |_, r| r.is_ok());
        assert_eq!(taken, keys.len(), "window is large enough");
        deliver_until_committed(&mut p, &mut s, &mut clients, &mut buf, now);
        now += 100;
    };
    // A fixed number of steps and no measurement, for `tools/instr-count.sh`: run under
    // cachegrind at two counts, the difference is the instructions of that many steps, exactly
    // (this machine's timings vary by a fifth from run to run; instruction counts do not).
    if let Ok(steps) = std::env::var(FIXED_STEPS_VAR) {
        let steps: u64 = steps.parse().expect("STATESYNC_BENCH_STEPS is a count");
        for _ in 0..steps {
            step();
        }
        println!("{steps} steps of {N} changes");
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("in_process");
    g.throughput(Throughput::Elements(N));
    g.bench_function("churn_set_1Mi_keys_64ch_4096", |b| b.iter(&mut step));
    g.finish();
}

/// Set to a count, `end_to_end_churn_set` runs that many steps after its prefill and exits.
const FIXED_STEPS_VAR: &str = "STATESYNC_BENCH_STEPS";

criterion_group!(
    benches,
    codec,
    ring,
    apply,
    end_to_end,
    end_to_end_churn_set
);
criterion_main!(benches);

//! Loopback datagram rate of the transport, io_uring vs sendmmsg/recvmmsg.
//!
//! One thread plays both ends, to keep the figure about the transport rather than scheduling:
//! each iteration encodes a batch of datagrams (a sequence number only; encoding is the protocol's
//! cost, not ours), flushes it, then drains the receiver until the whole batch has arrived.
//! Throughput is in datagrams ("elements") per second.
//!
//! Variants: backend (uring, mmsg) x datagram size (1472 B, 16 KiB) x GSO/GRO (on, off).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use statesync::transport::{IoChoice, Transport, TransportConfig, TransportError};

const BATCH: usize = 64;

struct Pair {
    tx: Transport,
    rx: Transport,
    dst: SocketAddr,
    lost: u64,
}

fn pair(io: IoChoice, size: usize, offload: bool) -> Result<Pair, TransportError> {
    let cfg = TransportConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        io,
        max_datagram_bytes: size,
        batch: BATCH,
        gso: offload,
        gro: offload,
        ..Default::default()
    };
    let tx = Transport::open(cfg.clone())?;
    let rx = Transport::open(cfg)?;
    let dst = rx.local_addr();
    Ok(Pair {
        tx,
        rx,
        dst,
        lost: 0,
    })
}

impl Pair {
    fn round(&mut self, size: usize) {
        let mut seq = 0u64;
        while let Some(slot) = self.tx.tx_slot() {
            slot[..8].copy_from_slice(&seq.to_le_bytes());
            self.tx.tx_commit(size, self.dst);
            seq += 1;
        }
        let sent = self.tx.flush().unwrap();
        let mut got = 0;
        let mut bytes = 0;
        while got < sent {
            let n = self
                .rx
                .poll_recv(Some(Duration::from_millis(200)), &mut |_, d| {
                    bytes += d.len()
                })
                .unwrap();
            if n == 0 {
                self.lost += (sent - got) as u64; // timed out: loopback dropped some
                break;
            }
            got += n;
        }
        black_box(bytes);
    }
}

fn loopback(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport_loopback");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (io, name) in [(IoChoice::Uring, "uring"), (IoChoice::Mmsg, "mmsg")] {
        for size in [1472, 16_384] {
            for offload in [true, false] {
                let id = format!(
                    "{name}/{size}B/{}",
                    if offload { "gso+gro" } else { "plain" }
                );
                let mut p = match pair(io, size, offload) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("skipping {id}: {e}");
                        continue;
                    }
                };
                g.bench_function(&id, |b| b.iter(|| p.round(size)));
                let s = p.tx.stats();
                let r = p.rx.stats();
                eprintln!(
                    "{id}: gso_on={} gro_on={} lost={} | per datagram: send syscalls {:.3}, recv syscalls {:.3} | gso_sends={} gro_receives={} rearms={} eagain={} enobufs={}",
                    p.tx.gso_enabled(),
                    p.rx.gro_enabled(),
                    p.lost,
                    s.send_syscalls as f64 / s.datagrams_sent.max(1) as f64,
                    r.recv_syscalls as f64 / r.datagrams_received.max(1) as f64,
                    s.gso_sends,
                    r.gro_receives,
                    r.recv_rearms,
                    s.send_eagain,
                    s.send_enobufs,
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);

//! The load client behind `statesync churn --connect`: drives running daemons over the network
//! with SUBMIT frames at a set rate. It sends each batch to every listed control unit; only the
//! primary applies it (the others count it as rejected), so load follows a failover without the
//! client knowing who the primary is.

use crate::cli::say;
use crate::rng::SplitMix64;
use crate::wire::{Entry, FrameBuilder, encode_entry};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub targets: Vec<SocketAddr>,
    /// The control unit at each target (same order); needed with `keys`.
    pub target_ids: Vec<u32>,
    /// The submitter's link keys (`None`: frames go unauthenticated).
    pub link_keys: Option<crate::auth::LinkKeys>,
    pub submitter_id: u32,
    pub channels: u32,
    pub keys: u64,
    pub value_bytes: usize,
    /// Changes per second; `None` = as fast as the socket takes them.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub datagram_bytes: usize,
    pub seed: u64,
    /// Sections used: 0..sections.
    pub sections: u8,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadReport {
    pub changes_sent: u64,
    pub datagrams_sent: u64,
    pub send_errors: u64,
}

/// Sends load until the duration passes or `stop` returns true; prints progress every second
/// when `progress` is set.
pub fn run_load(
    spec: &LoadSpec,
    progress: bool,
    mut stop: impl FnMut() -> bool,
) -> std::io::Result<LoadReport> {
    let bind: SocketAddr = if spec.targets.first().is_some_and(|a| a.is_ipv6()) {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind)?;
    let mut auth = spec.link_keys.as_ref().map(crate::auth::Auth::new);
    if let Some(a) = &auth
        && let Some(id) = spec.target_ids.iter().find(|&&id| !a.knows(id))
    {
        return Err(std::io::Error::other(format!(
            "no key for control unit {id} in the submitter's key file"
        )));
    }
    sock.set_nonblocking(true)?;
    let mut rx = [0u8; crate::auth::HELLO_BYTES * 4];
    let mut rng = SplitMix64::new(spec.seed);
    let mut report = LoadReport::default();
    let mut buf = vec![0u8; spec.datagram_bytes.max(256)];
    let mut entry = Vec::with_capacity(64);
    let value = vec![0x5au8; spec.value_bytes];
    let start = Instant::now();
    let mut last_print = (Instant::now(), 0u64);
    let mut seq = 0u64;
    while start.elapsed() < spec.duration && !stop() {
        // How many changes are due by now (open loop), in frames of as many as fit.
        let due = match spec.rate {
            Some(r) => {
                ((start.elapsed().as_secs_f64() * r) as u64).saturating_sub(report.changes_sent)
            }
            None => u64::MAX,
        };
        if due == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Hellos from the control units: each names its life, which our frames must name
        // before it acts on them.
        if let Some(a) = &mut auth {
            let now_us = start.elapsed().as_micros() as u64;
            while let Ok((n, src)) = sock.recv_from(&mut rx) {
                let expected = spec
                    .targets
                    .iter()
                    .position(|t| *t == src)
                    .and_then(|i| spec.target_ids.get(i).copied());
                if expected.is_some() {
                    a.open(now_us, src, expected, &rx[..n]);
                }
            }
        }
        // Packet sequence numbers start at 1 (the frame's first change's number + 1).
        let mut fb = FrameBuilder::new(&mut buf, spec.submitter_id, 0, seq + 1);
        let mut n = 0u64;
        while n < due {
            let key = rng.below(spec.keys);
            let channel = (key % spec.channels as u64) as u32;
            entry.clear();
            let section = ((key / spec.channels as u64) % spec.sections as u64) as u8;
            encode_entry(
                &mut entry,
                &Entry {
                    section,
                    key,
                    value: Some(&value),
                    private: false,
                },
            );
            if !fb.push_submit(channel, seq, (&entry, 1), (&[], 0)) {
                break;
            }
            seq += 1;
            n += 1;
        }
        let len = fb.finish();
        for (i, t) in spec.targets.iter().enumerate() {
            if let Some(a) = &mut auth {
                // Each control unit's link has its own key: seal for it.
                let id = spec.target_ids.get(i).copied().unwrap_or(0);
                if !a.seal(id, &mut buf[..len]) {
                    report.send_errors += 1;
                    continue;
                }
            }
            match sock.send_to(&buf[..len], t) {
                Ok(_) => report.datagrams_sent += 1,
                Err(_) => report.send_errors += 1,
            }
        }
        report.changes_sent += n;
        if progress && last_print.0.elapsed() >= Duration::from_secs(1) {
            let dt = last_print.0.elapsed().as_secs_f64();
            say!(
                "[{:>5.1}s] load: {:>9.0} changes/s sent to {} control units",
                start.elapsed().as_secs_f64(),
                (report.changes_sent - last_print.1) as f64 / dt,
                spec.targets.len()
            );
            last_print = (Instant::now(), report.changes_sent);
        }
    }
    Ok(report)
}

//! `ControlUnit::submit_batch`, the runtime's submit loop: changes go in in order, each result
//! reaches the caller, and a refusal the caller stops on leaves that change and every later one
//! untaken (the worker leaves them in its ring for the next turn).

use statesync::proto::{ControlUnit, ProtoConfig, SubmitError, Topology};
use statesync::wire::Entry;

const VALUE: [u8; 8] = [7; 8];

fn entry(key: u64) -> Entry<'static> {
    Entry {
        section: (key % 64) as u8,
        key,
        value: Some(&VALUE),
        private: false,
    }
}

fn primary(window_ops: usize) -> ControlUnit {
    let mut cfg = ProtoConfig::new(Topology {
        control_units: vec![1, 2],
        clients: vec![100],
        channel_owner: vec![100, 100],
        submitters: vec![],
    });
    cfg.window_ops = window_ops;
    ControlUnit::new(cfg, 1, true, 0, 0)
}

#[test]
fn a_batch_stops_where_the_caller_stops() {
    let mut p = primary(4);
    let count = p.config().window_ops + 8;
    let mut seen = Vec::new();
    let taken = p.submit_batch(
        0,
        count,
        |i| (0, entry(i as u64)),
        |i, r| {
            seen.push((i, r));
            r.is_ok()
        },
    );
    // The channel's retention window holds 4 uncommitted ops: the 5th is refused and the
    // batch ends there.
    assert_eq!(taken, 4);
    let ok: Vec<_> = (0..4).map(|i| (i, Ok(i as u64 + 1))).collect();
    assert_eq!(seen[..4], ok[..]);
    assert_eq!(seen[4..], [(4, Err(SubmitError::Backpressure))]);
    assert_eq!(p.next_op(0), 5, "nothing after the refused change went in");
}

#[test]
fn a_refusal_the_caller_goes_past_counts_as_taken() {
    let mut p = primary(64);
    let mut results = Vec::new();
    let taken = p.submit_batch(
        0,
        3,
        |i| (if i == 1 { 99 } else { 1 }, entry(i as u64)),
        |_, r| {
            results.push(r);
            true
        },
    );
    assert_eq!(taken, 3);
    assert_eq!(results, [Ok(1), Err(SubmitError::UnknownChannel), Ok(2)]);
}

//! The whole fabric over real loopback sockets, briefly, with the transport fault layer on:
//! it must converge with equal digests and no committed op lost. (Throughput is measured by
//! `statesync churn` and the benches, not here.)

use statesync::cli::churn::{ChurnArgs, Submitter, churn};
use statesync::transport::IoChoice;

fn args(io: IoChoice, loss: f64, submitter: Submitter) -> ChurnArgs {
    ChurnArgs {
        duration: 1.0,
        rate: "20000".into(),
        channels: 8,
        keys: 4096,
        value_bytes: 32,
        io,
        workers: Some(2),
        clients: 2,
        datagram_bytes: 1472,
        window_ops: 4096,
        loss,
        dup: loss / 2.0,
        reorder: loss,
        json: None,
        hdr_log: None,
        submitter,
        prefill: true,
        seed: 7,
        connect: vec![],
        submitter_id: 900,
        sections: 64,
    }
}

#[test]
fn churn_converges_over_lossy_loopback() {
    assert_eq!(
        churn(&args(IoChoice::Auto, 0.01, Submitter::Inline)),
        Ok(true)
    );
}

/// The mmsg backend, fed by a generator thread through the submission rings.
#[test]
fn churn_converges_on_the_mmsg_fallback() {
    assert_eq!(
        churn(&args(IoChoice::Mmsg, 0.0, Submitter::Thread)),
        Ok(true)
    );
}

use super::*;
use crate::wire::FrameBuilder;

const A: NodeId = 1;
const B: NodeId = 101;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pair() -> (LinkKeys, LinkKeys) {
    let mut k = LinkKeys::generate(&[(A, B)]).unwrap();
    let b = k.pop().unwrap();
    let a = k.pop().unwrap();
    (a, b)
}

/// A frame from `sender` with one heartbeat-sized message, trailer zeroed.
fn frame(sender: NodeId, seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut fb = FrameBuilder::new(&mut buf, sender, 0x100, seq);
    assert!(fb.push_submit(3, seq, (&[], 0), (&[], 0)));
    let n = fb.finish();
    buf.truncate(n);
    buf
}

/// Runs the opener/hello exchange: afterwards both know each other's life.
fn open_session(a: &mut Auth, b: &mut Auth, seq: u64, now_us: u64) {
    let mut f = frame(A, seq);
    assert!(a.seal(B, &mut f));
    assert_eq!(
        b.open(now_us, addr(1), Some(A), &f),
        Verdict::Consumed,
        "opener"
    );
    let mut h = [0u8; 256];
    let (n, to, at) = b.poll_hello(now_us, &mut h).expect("hello due");
    assert_eq!((to, at), (A, addr(1)));
    assert_eq!(
        a.open(0, addr(2), Some(B), &h[..n]),
        Verdict::Consumed,
        "hello"
    );
    assert_eq!(a.peer_boot(B), b.boot());
    assert_eq!(b.peer_boot(A), a.boot());
}

#[test]
fn a_session_opens_and_frames_verify_once() {
    let (ka, kb) = pair();
    let (mut a, mut b) = (Auth::with_boot(&ka, 10), Auth::with_boot(&kb, 20));
    open_session(&mut a, &mut b, 1, 0);
    let mut f = frame(A, 2);
    assert!(a.seal(B, &mut f));
    assert_eq!(b.open(0, addr(1), Some(A), &f), Verdict::Deliver);
    assert_eq!(
        b.open(0, addr(1), Some(A), &f),
        Verdict::Reject(Reject::Replay)
    );
    assert_eq!(b.stats.delivered, 1);
    assert_eq!(b.stats.rejected_replay, 1);
}

#[test]
fn every_altered_byte_fails() {
    let (ka, kb) = pair();
    let (mut a, mut b) = (Auth::with_boot(&ka, 10), Auth::with_boot(&kb, 20));
    open_session(&mut a, &mut b, 1, 0);
    let mut f = frame(A, 2);
    assert!(a.seal(B, &mut f));
    for i in 0..f.len() {
        let mut g = f.clone();
        g[i] ^= 0x40;
        assert!(
            matches!(b.open(0, addr(1), Some(A), &g), Verdict::Reject(_)),
            "byte {i} altered was accepted"
        );
    }
    assert_eq!(
        b.open(0, addr(1), Some(A), &f),
        Verdict::Deliver,
        "the original still passes"
    );
}

#[test]
fn wrong_key_wrong_sender_and_no_tag_fail_closed() {
    let (ka, kb) = pair();
    let mut b = Auth::with_boot(&kb, 20);
    let mut f = frame(A, 1);
    // Sealed with a key of another deployment.
    let mut wrong = Auth::with_boot(&LinkKeys::generate(&[(A, B)]).unwrap().remove(0), 10);
    assert!(wrong.seal(B, &mut f));
    assert_eq!(
        b.open(0, addr(1), Some(A), &f),
        Verdict::Reject(Reject::BadTag)
    );
    // Right key, but from the address of another node.
    let mut a = Auth::with_boot(&ka, 10);
    let mut g = frame(A, 2);
    assert!(a.seal(B, &mut g));
    assert_eq!(
        b.open(0, addr(9), Some(7), &g),
        Verdict::Reject(Reject::SenderMismatch)
    );
    // No tag at all.
    let h = frame(A, 3);
    assert_eq!(
        b.open(0, addr(1), Some(A), &h),
        Verdict::Reject(Reject::Unauthenticated)
    );
    // A sender we hold no key for.
    let mut c = frame(55, 4);
    c[4 + 1] |= FRAME_FLAG_AUTH;
    assert_eq!(b.open(0, addr(1), None, &c), Verdict::Reject(Reject::NoKey));
    assert_eq!(b.peer_boot(A), 0, "nothing learnt from failures");
    assert!(
        b.poll_hello(0, &mut [0u8; 128]).is_none(),
        "no hello to a failure"
    );
}

#[test]
fn frames_from_before_either_restart_fail() {
    let (ka, kb) = pair();
    let (mut a, mut b) = (Auth::with_boot(&ka, 10), Auth::with_boot(&kb, 20));
    open_session(&mut a, &mut b, 1, 0);
    let mut old = frame(A, 2);
    assert!(a.seal(B, &mut old));
    // B restarts: the frame names B's ended life.
    let mut b2 = Auth::with_boot(&kb, 30);
    assert_eq!(
        b2.open(0, addr(1), Some(A), &old),
        Verdict::Reject(Reject::StaleSession)
    );
    // A restarts and opens a new session with B; A's old frame is then stale at B.
    let mut a2 = Auth::with_boot(&ka, 40);
    open_session(&mut a2, &mut b, 1, HELLO_INTERVAL_US);
    assert_eq!(
        b.open(0, addr(1), Some(A), &old),
        Verdict::Reject(Reject::StaleSession)
    );
    let mut f = frame(A, 2);
    assert!(a2.seal(B, &mut f));
    assert_eq!(b.open(0, addr(1), Some(A), &f), Verdict::Deliver);
}

#[test]
fn a_sequence_number_that_does_not_grow_is_never_sealed() {
    let (ka, _) = pair();
    let mut a = Auth::with_boot(&ka, 10);
    let mut f = frame(A, 5);
    assert!(a.seal(B, &mut f));
    let mut g = frame(A, 5);
    assert!(!a.seal(B, &mut g));
    assert_eq!(a.stats.refused_seq, 1);
}

#[test]
fn hellos_are_rate_limited_and_never_larger_than_the_opener() {
    let (ka, kb) = pair();
    let (mut a, mut b) = (Auth::with_boot(&ka, 10), Auth::with_boot(&kb, 20));
    let mut buf = [0u8; 256];
    for seq in 1..=10 {
        let mut f = frame(A, seq);
        assert!(a.seal(B, &mut f));
        assert_eq!(b.open(seq, addr(1), Some(A), &f), Verdict::Consumed);
        if let Some((n, _, _)) = b.poll_hello(seq, &mut buf) {
            assert!(n <= f.len());
        }
    }
    assert_eq!(b.stats.hellos_tx, 1, "one hello per interval");
}

/// Line card 100 holds only its own link keys: whatever it claims, from whatever address, a
/// frame it seals never verifies as line card 101's (nor as a control unit's) at a control unit.
#[test]
fn a_line_cards_keys_cannot_speak_for_another_node() {
    let keys = LinkKeys::generate(&[(1, 100), (1, 101), (1, 2)]).unwrap();
    let get = |id| keys.iter().find(|k| k.node() == id).unwrap().clone();
    let mut cu = Auth::with_boot(&get(1), 50);
    let mut card = Auth::with_boot(&get(100), 60);
    for claimed in [101, 2] {
        // From the other node's address (spoofed): the tag was made with card 100's link key.
        let mut f = frame(claimed, if claimed == 101 { 10 } else { 20 });
        assert!(card.seal(1, &mut f));
        assert_eq!(
            cu.open(0, addr(9), Some(claimed), &f),
            Verdict::Reject(Reject::BadTag),
            "as {claimed}"
        );
        // From its own address: the claim does not match the address.
        assert_eq!(
            cu.open(0, addr(8), Some(100), &f),
            Verdict::Reject(Reject::SenderMismatch)
        );
    }
    assert_eq!(cu.peer_boot(101), 0);
    assert_eq!(cu.peer_boot(2), 0);
}

//! How a UDP admin request proves it comes from a holder of the admin token, without the
//! token ever being sent: an HMAC-SHA256 keyed with the token, over the request itself, which
//! also carries a timestamp and a random nonce so that a sniffed datagram cannot be replayed.
//!
//! Wire form (one datagram):
//!
//! ```text
//! {"mac":"<64 lowercase hex digits>","body":"<the request as a JSON string>"}
//! body = {"cmd":"takeover", ..., "ts_us":<sender's Unix time, µs>,"nonce":"<16 hex digits>"}
//! mac  = HMAC-SHA256(key = the token's bytes, message = the UTF-8 bytes of body)
//! ```
//!
//! The tag covers the body's bytes exactly as they travel inside the string, so neither side
//! has to re-serialize anything: there is no canonical form to get wrong. The node checks, in
//! this order, and refuses (counting each reason apart) at the first that fails:
//! 1. the tag, with `ring`'s constant-time [`hmac::verify`] (`refused_mac`);
//! 2. `|now - ts_us| <= `[`MAC_WINDOW_US`] on the node's Unix clock (`refused_stale`);
//! 3. that no request with the same `(ts_us, nonce)` was accepted before (`refused_replay`).
//!
//! The replay cache ([`ReplayCache`]) remembers every accepted `(ts_us, nonce)` while its
//! `ts_us` is inside the window; an entry leaves only once step 2 would refuse it anyway. It
//! has a fixed capacity ([`REPLAY_CACHE_ENTRIES`]) allocated once: when it is full, a new
//! authenticated request is **refused** (counted as a replay refusal, "cache full") until
//! entries age out, rather than evicting one that might then be replayed. Only requests whose
//! tag verified ever enter it, so a sender without the token cannot fill it. A node whose Unix
//! clock steps back by more than the window could accept an old datagram again: keep clocks
//! slewed (NTP), not stepped.

use super::config::AdminToken;
use ring::hmac;
use serde_json::Value;

/// How far a request's `ts_us` may be from the node's clock, either way. Wide enough for
/// loosely synchronized clocks and a slow network; a replay must come within it.
pub const MAC_WINDOW_US: u64 = 30_000_000;
/// Accepted requests remembered at most. A status read pages (one request per page) and a
/// cluster view asks every node, but an operator sends nowhere near this many authenticated
/// requests per window (about 68 per second sustained over two windows).
pub const REPLAY_CACHE_ENTRIES: usize = 4096;
/// Hex digits of a nonce (64 bits).
const NONCE_HEX_LEN: usize = 16;

/// Why a MAC'd request was refused; each is counted apart in the admin stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacRefusal {
    /// The tag does not verify (or is not 64 hex digits), or the node has no token.
    BadMac(String),
    /// The tag verified but `ts_us` is outside the window (or missing), e.g. a datagram
    /// captured and sent again later, or a sender whose clock is off.
    Stale(String),
    /// The tag verified and the time fits, but this `(ts_us, nonce)` was accepted before, or
    /// the replay cache is full.
    Replayed(String),
}

/// The node's side: the key and the cache of accepted requests.
pub struct UdpAuth {
    key: hmac::Key,
    seen: ReplayCache,
}

impl std::fmt::Debug for UdpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UdpAuth({} seen)", self.seen.len())
    }
}

impl UdpAuth {
    pub fn new(token: &AdminToken) -> UdpAuth {
        UdpAuth {
            key: key(token),
            seen: ReplayCache::new(REPLAY_CACHE_ENTRIES),
        }
    }

    /// Checks one envelope's `mac` over its `body` at the node's Unix time `now_unix_us`; on
    /// success the body, parsed, with its `(ts_us, nonce)` now remembered. A body that
    /// verifies but is not JSON, or lacks `ts_us`/`nonce`, is refused as stale: without them
    /// it cannot be told from a replay.
    pub fn open(
        &mut self,
        mac_hex: &str,
        body: &str,
        now_unix_us: u64,
    ) -> Result<Value, MacRefusal> {
        let tag = decode_tag(mac_hex)
            .ok_or_else(|| MacRefusal::BadMac("\"mac\" is not 64 hex digits".into()))?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| {
            MacRefusal::BadMac("wrong mac (not made with this node's token)".into())
        })?;
        let v: Value = serde_json::from_str(body)
            .map_err(|e| MacRefusal::Stale(format!("body is not JSON: {e}")))?;
        let ts_us = v.get("ts_us").and_then(Value::as_u64);
        let nonce = v.get("nonce").and_then(Value::as_str).and_then(parse_nonce);
        let (Some(ts_us), Some(nonce)) = (ts_us, nonce) else {
            return Err(MacRefusal::Stale(
                "body needs \"ts_us\" (u64) and \"nonce\" (16 hex digits)".into(),
            ));
        };
        if ts_us.abs_diff(now_unix_us) > MAC_WINDOW_US {
            return Err(MacRefusal::Stale(format!(
                "ts_us is {:.1} s {} this node's clock, outside the ±{} s window (replayed, or a clock is off)",
                ts_us.abs_diff(now_unix_us) as f64 / 1e6,
                if ts_us < now_unix_us {
                    "behind"
                } else {
                    "ahead of"
                },
                MAC_WINDOW_US / 1_000_000
            )));
        }
        self.seen.admit(ts_us, nonce, now_unix_us, MAC_WINDOW_US)?;
        Ok(v)
    }
}

/// The HMAC key of a token.
fn key(token: &AdminToken) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, token.as_str().as_bytes())
}

/// The client's side: `req` (a JSON object) with `ts_us` and `nonce` added, wrapped in the
/// envelope with its tag. Each call must use a fresh `nonce` (see [`seal_now`]).
pub fn seal(req: &Value, token: &AdminToken, ts_us: u64, nonce: u64) -> Value {
    let mut body = req.clone();
    if let Some(o) = body.as_object_mut() {
        o.insert("ts_us".into(), ts_us.into());
        o.insert("nonce".into(), format!("{nonce:016x}").into());
    }
    let body = body.to_string();
    let tag = hmac::sign(&key(token), body.as_bytes());
    serde_json::json!({"mac": ::hex::encode(tag.as_ref()), "body": body})
}

/// [`seal`] at the current Unix time with a random nonce: what a client sends, anew for each
/// attempt (a resent datagram would be refused as a replay).
pub fn seal_now(req: &Value, token: &AdminToken) -> Value {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut n = [0u8; 8];
    // Should the system's generator fail, the time still differs per request; the node then
    // refuses a true duplicate as a replay, which is safe.
    let _ = SystemRandom::new().fill(&mut n);
    seal(
        req,
        token,
        crate::daemon::unix_now_us(),
        u64::from_le_bytes(n),
    )
}

fn decode_tag(hex: &str) -> Option<[u8; 32]> {
    let mut tag = [0u8; 32];
    ::hex::decode_to_slice(hex, &mut tag).ok()?;
    Some(tag)
}

fn parse_nonce(hex: &str) -> Option<u64> {
    (hex.len() == NONCE_HEX_LEN && hex.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The `(ts_us, nonce)` of accepted requests whose `ts_us` is still inside the window, at
/// most `capacity` of them, in a vector allocated once (a linear scan of a few thousand pairs
/// per authenticated request is cheaper than the HMAC before it).
#[derive(Debug)]
pub struct ReplayCache {
    entries: Vec<(u64, u64)>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            entries: Vec::with_capacity(capacity),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remembers `(ts_us, nonce)` unless it was seen (a replay) or the cache is full of
    /// entries still inside the window (refused: evicting one would let it be replayed).
    /// Entries whose `ts_us` fell out of the window at `now_unix_us` are dropped first.
    pub fn admit(
        &mut self,
        ts_us: u64,
        nonce: u64,
        now_unix_us: u64,
        window_us: u64,
    ) -> Result<(), MacRefusal> {
        self.entries
            .retain(|&(t, _)| t.saturating_add(window_us) >= now_unix_us);
        if self.entries.contains(&(ts_us, nonce)) {
            return Err(MacRefusal::Replayed(
                "replayed: this ts_us and nonce were accepted before".into(),
            ));
        }
        if self.entries.len() >= self.capacity {
            return Err(MacRefusal::Replayed(format!(
                "replay cache full ({} authenticated requests within the window): retry in a few seconds",
                self.capacity
            )));
        }
        self.entries.push((ts_us, nonce));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000_000_000;

    fn parts(v: &Value) -> (String, String) {
        (
            v["mac"].as_str().unwrap().to_owned(),
            v["body"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn sealed_request_opens_once() {
        let t = AdminToken::from_text("0123456789abcdef-token");
        let sealed = seal(&json!({"cmd": "takeover"}), &t, NOW, 0xfeed);
        let (mac, body) = parts(&sealed);
        assert_eq!(mac.len(), 64);
        assert!(!sealed.to_string().contains(t.as_str()), "{sealed}");
        let mut auth = UdpAuth::new(&t);
        let v = auth.open(&mac, &body, NOW + 1_000).unwrap();
        assert_eq!(
            (v["cmd"].as_str(), v["ts_us"].as_u64(), v["nonce"].as_str()),
            (Some("takeover"), Some(NOW), Some("000000000000feed"))
        );
        let e = auth.open(&mac, &body, NOW + 2_000).unwrap_err();
        assert!(matches!(e, MacRefusal::Replayed(_)), "{e:?}");
        // The same command with a fresh nonce is a new request.
        let (mac2, body2) = parts(&seal(&json!({"cmd": "takeover"}), &t, NOW, 0xbeef));
        auth.open(&mac2, &body2, NOW).unwrap();
    }

    #[test]
    fn wrong_key_or_changed_body_or_bad_hex_is_a_bad_mac() {
        let t = AdminToken::from_text("0123456789abcdef-token");
        let other = AdminToken::from_text("0123456789abcdef-tokeX");
        let mut auth = UdpAuth::new(&t);
        let (mac, body) = parts(&seal(&json!({"cmd": "status"}), &other, NOW, 1));
        assert!(matches!(
            auth.open(&mac, &body, NOW),
            Err(MacRefusal::BadMac(_))
        ));
        let (mac, body) = parts(&seal(&json!({"cmd": "status"}), &t, NOW, 1));
        let changed = body.replace("status", "takeover");
        assert!(matches!(
            auth.open(&mac, &changed, NOW),
            Err(MacRefusal::BadMac(_))
        ));
        for bad in [
            "",
            "zz",
            &mac[..63],
            &format!("{}g", &mac[..63]),
            &mac.to_uppercase()[..],
        ] {
            // Upper case hex is still hex: it verifies. Everything else does not.
            let r = auth.open(bad, &body, NOW);
            if bad == mac.to_uppercase() {
                assert!(r.is_ok(), "{r:?}");
            } else {
                assert!(matches!(r, Err(MacRefusal::BadMac(_))), "{bad}: {r:?}");
            }
        }
        // Nothing refused for its mac entered the cache.
        assert_eq!(auth.seen.len(), 1);
    }

    #[test]
    fn stale_or_future_or_unstamped_is_refused() {
        let t = AdminToken::from_text("0123456789abcdef-token");
        let mut auth = UdpAuth::new(&t);
        let hour_us = 3_600_000_000;
        for ts in [NOW - hour_us, NOW + hour_us, NOW - MAC_WINDOW_US - 1] {
            let (mac, body) = parts(&seal(&json!({"cmd": "takeover"}), &t, ts, 7));
            let e = auth.open(&mac, &body, NOW).unwrap_err();
            assert!(matches!(e, MacRefusal::Stale(_)), "{e:?}");
        }
        // At the window's edge: accepted.
        let (mac, body) = parts(&seal(
            &json!({"cmd": "takeover"}),
            &t,
            NOW - MAC_WINDOW_US,
            7,
        ));
        auth.open(&mac, &body, NOW).unwrap();
        // A body without ts_us/nonce, correctly tagged, cannot be checked for replay.
        let body = r#"{"cmd":"takeover"}"#;
        let mac = ::hex::encode(hmac::sign(&key(&t), body.as_bytes()).as_ref());
        assert!(matches!(
            auth.open(&mac, body, NOW),
            Err(MacRefusal::Stale(_))
        ));
    }

    #[test]
    fn replay_cache_is_bounded_and_ages_out() {
        let w = 10;
        let mut c = ReplayCache::new(3);
        for n in 0..3 {
            c.admit(100, n, 100, w).unwrap();
        }
        assert_eq!(c.entries.capacity(), 3);
        // Full of live entries: a new one is refused, not let in by evicting one.
        assert!(
            matches!(c.admit(101, 9, 101, w), Err(MacRefusal::Replayed(e)) if e.contains("full"))
        );
        assert!(
            matches!(c.admit(100, 1, 101, w), Err(MacRefusal::Replayed(e)) if e.contains("before"))
        );
        // Once their ts_us is out of the window they leave (a replay is then refused as stale).
        c.admit(111, 9, 111, w).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.entries.capacity(), 3, "never grows");
    }

    #[test]
    fn nonce_and_tag_parsing() {
        assert_eq!(parse_nonce("000000000000feed"), Some(0xfeed));
        assert_eq!(parse_nonce("+00000000000feed"), None);
        assert_eq!(parse_nonce("feed"), None);
        assert_eq!(decode_tag(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_tag(&"é".repeat(32)), None);
    }
}

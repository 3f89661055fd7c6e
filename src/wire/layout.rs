//! Fixed byte layouts of the frame header and of every message body.
//!
//! All structs are `#[repr(C)]` over unaligned little-endian integers, so their size is the sum of
//! their fields and any byte slice of the right length can be viewed as one.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// "SSYN" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SSYN");
/// 2: entries in the compact encoding (a head byte, then a u16 length and a u32 or u64 key)
/// and UPDATE_RUN.
pub const VERSION: u8 = 2;
pub const HEADER_BYTES: usize = size_of::<FrameHeader>();
pub const MSG_HEADER_BYTES: usize = size_of::<MsgHeader>();
/// Bytes of the authentication tag (AES-128-GCM).
pub const TAG_BYTES: usize = 16;
/// Room reserved at the end of every frame for the [`AuthTrailer`] (filled by `crate::auth`
/// just before the frame is sent; zero in a frame sent with authentication off).
pub const TRAILER_BYTES: usize = size_of::<AuthTrailer>();
/// Smallest possible datagram: header and trailer, no messages.
pub const MIN_FRAME_BYTES: usize = HEADER_BYTES + TRAILER_BYTES;
/// Largest frame we ever build or accept (a UDP payload limit).
pub const MAX_FRAME_BYTES: usize = 65_507;
/// Number of state sections; a cookie has one bit per section.
pub const SECTIONS: usize = 64;

/// Frame flag: the tag slot holds a real authentication tag.
pub const FRAME_FLAG_AUTH: u8 = 1;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U32,
    pub version: u8,
    pub flags: u8,
    pub msg_count: U16,
    pub sender: U32,
    /// Bytes of messages between the header and the tag.
    pub payload_len: U32,
    pub epoch: U64,
    pub packet_seq: U64,
}

/// The last bytes of every frame. The two boot nonces name the session (one life of the sender
/// and one of the receiver) whose key made the tag, so a frame from before either end
/// restarted no longer verifies. Everything before `tag` is authenticated.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AuthTrailer {
    /// The sender's boot nonce: start time in microseconds, shifted left 8, plus 8 random
    /// bits, so a later life has a larger nonce.
    pub sender_boot: U64,
    /// The receiver's boot nonce as the sender knows it; 0 before it has heard the receiver
    /// (a session opener: authenticated, but its messages are not acted upon).
    pub receiver_boot: U64,
    pub tag: [u8; TAG_BYTES],
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MsgHeader {
    pub kind: u8,
    pub flags: u8,
    /// Bytes of body following this header.
    pub body_len: U16,
}

/// Message kinds. The numeric values are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Update = 1,
    Ack = 2,
    FwdAck = 3,
    Commit = 4,
    Nack = 5,
    Heartbeat = 6,
    LaQuery = 7,
    LaReply = 8,
    ReplayBegin = 9,
    ReplayEntry = 10,
    ReplayEnd = 11,
    ReplayAck = 12,
    XferBegin = 13,
    XferEntry = 14,
    XferEnd = 15,
    XferAck = 16,
    XferHistory = 17,
    /// A load client asks the primary to apply a change (UPDATE layout; `op` is the
    /// submitter's own sequence number, `cookie` is ignored).
    Submit = 18,
    /// Consecutive ops of one channel under one header ([`RunFixed`]): op IDs follow from the
    /// first, cookies from the ops' public entries. The ordinary update on the data path.
    UpdateRun = 19,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            1 => Update,
            2 => Ack,
            3 => FwdAck,
            4 => Commit,
            5 => Nack,
            6 => Heartbeat,
            7 => LaQuery,
            8 => LaReply,
            9 => ReplayBegin,
            10 => ReplayEntry,
            11 => ReplayEnd,
            12 => ReplayAck,
            13 => XferBegin,
            14 => XferEntry,
            15 => XferEnd,
            16 => XferAck,
            17 => XferHistory,
            18 => Submit,
            19 => UpdateRun,
            _ => return None,
        })
    }
}

/// UPDATE message flag: the op is already contained in a state transfer (cookie only, no body).
pub const UPDATE_FLAG_PREAPPLIED: u8 = 1;

/// Fixed part of an UPDATE; `public_count + private_count` entries follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct UpdateFixed {
    pub channel: U32,
    pub public_count: U16,
    pub private_count: U16,
    pub op: U64,
    pub cookie: U64,
}

/// An entry's head byte: its section in the low six bits, then this bit to delete the key (no
/// value length and no value follow), then [`ENTRY_HEAD_WIDE_KEY`]. After the head come the
/// value length (u16, unless deleted), the key (u32, or u64 when wide) and the value: 39 bytes
/// for a 32-byte value under a key below 2^32, where the fixed header of version 1 took 44.
pub const ENTRY_HEAD_DELETE: u8 = 0x40;
/// The key takes eight bytes; only for a key past `u32::MAX` (one encoding per key).
pub const ENTRY_HEAD_WIDE_KEY: u8 = 0x80;
/// The head byte's section bits.
pub const ENTRY_HEAD_SECTION: u8 = 0x3f;

/// Fixed part of an UPDATE_RUN; ops follow to the end of the body, op `first_op + i` being
/// the `i`-th: each is its public and its private entry count (one byte each), then its
/// entries. An op with more than 255 of either goes as an UPDATE of its own.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RunFixed {
    pub channel: U32,
    pub first_op: U64,
}

/// ACK (client→primary, cumulative), FWD_ACK (primary→standby) and LA_QUERY
/// (new primary→client, `op` = the standby's highest held op).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ChannelOp {
    pub channel: U32,
    /// ACK and NACK: the stream ID of the last replay the client finished since it adopted
    /// the current epoch (0 = none). A primary drops acks of an older generation: they
    /// describe the client's position before a replay reset it. 0 in other messages.
    pub generation: U32,
    pub op: U64,
}

/// COMMIT watermark (standby→primary): applied and contiguously held op IDs.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CommitBody {
    pub channel: U32,
    pub reserved: U32,
    pub applied: U64,
    pub held: U64,
}

/// NACK: please retransmit ops `from..=to` of `channel`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NackBody {
    pub channel: U32,
    /// As in [`ChannelOp::generation`].
    pub generation: U32,
    pub from: U64,
    pub to: U64,
}

pub const ROLE_PRIMARY: u8 = 1;
pub const ROLE_STANDBY: u8 = 2;
pub const ROLE_CLIENT: u8 = 3;
/// Heartbeat flag: the sender has not heard the primary for the failover timeout.
pub const HB_FLAG_PRIMARY_LOST: u8 = 1;
/// Heartbeat flag: the sender is a standby without state and asks for a state transfer.
pub const HB_FLAG_NEEDS_TRANSFER: u8 = 2;
/// Heartbeat flag: the sender is a standby with a complete state.
pub const HB_FLAG_JOINED: u8 = 4;
/// Heartbeat flag (primary): an operator asked the addressed standby to take over now.
pub const HB_FLAG_SWITCHOVER: u8 = 8;
// 16 was HB_FLAG_KEPT_VIEW: a kept set is now told by its `view_epoch`, below the frame's.

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HeartbeatBody {
    pub role: u8,
    pub flags: u8,
    /// Control units: the version of the sync set in `sync_mask` (the primary's own, or the
    /// one a standby last took from it); it wraps. Clients: 0.
    pub sync_version: U16,
    /// Primary: bit i set when control unit i is in the sync set. Standby: the mask it last saw.
    pub sync_mask: U32,
    /// Primary: the target of a switchover (with HB_FLAG_SWITCHOVER), else 0. Standbys and
    /// clients: their boot ID, new on every restart. Read it with [`HeartbeatBody::boot_id`]
    /// or [`HeartbeatBody::switchover_target`], which say which one is meant.
    pub boot_or_target: U32,
    /// Standby that has lost the primary: the control unit it would follow (0 = none).
    pub vote: U32,
    /// Control units: the epoch whose primary announced the set in `sync_mask` (the primary:
    /// its own; a standby that resumed a set kept from an earlier epoch: that epoch; 0: no
    /// set). Versions count per primary life, so they order two sets only within one epoch;
    /// across epochs the later epoch's set is the fresher. Never above the frame's epoch.
    /// Clients: 0.
    pub view_epoch: U64,
}

impl HeartbeatBody {
    /// A standby's or client's boot ID (new on every restart).
    pub fn boot_id(&self) -> u32 {
        self.boot_or_target.get()
    }
    /// A primary's switchover target (meaningful with `HB_FLAG_SWITCHOVER`).
    pub fn switchover_target(&self) -> u32 {
        self.boot_or_target.get()
    }
}

/// LA_REPLY flag: the client has no history (fresh start) and needs a full replay.
pub const LA_FLAG_UNKNOWN: u32 = 1;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LaReplyBody {
    pub channel: U32,
    pub flags: U32,
    pub last_applied: U64,
    /// Union of the cookies of ops the client applied above the queried op.
    pub cookie_above: U64,
    /// Epoch of the primary whose frame gave the client `last_applied` (an update or the end
    /// of a replay): op IDs are reused after a cut, so the op alone does not say which op it is.
    pub data_epoch: U64,
}

/// REPLAY_BEGIN and XFER_BEGIN.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BulkBegin {
    pub channel: U32,
    pub stream: U32,
    /// Sections reset by this stream (all ones for a full replay or a transfer).
    pub sections: U64,
    /// The op ID the receiver's state corresponds to once the stream ends.
    pub base_op: U64,
    /// Transfer only: the client's acknowledged op at the snapshot (ops above are pre-applied).
    pub acked_op: U64,
}

/// Bulk entry flag: the entry is primary-only (never sent to clients).
pub const BULK_FLAG_PRIVATE: u8 = 1;

/// REPLAY_ENTRY and XFER_ENTRY; `value_len` value bytes follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BulkEntry {
    pub channel: U32,
    pub stream: U32,
    pub index: U32,
    pub section: u8,
    pub flags: u8,
    pub value_len: U16,
    pub key: U64,
}

/// REPLAY_END and XFER_END.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BulkEnd {
    pub channel: U32,
    pub stream: U32,
    pub total: U32,
    pub reserved: U32,
    pub base_op: U64,
}

/// REPLAY_ACK and XFER_ACK: the receiver holds entries `0..next_index`; `done` = 1 once ended.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BulkAck {
    pub channel: U32,
    pub stream: U32,
    pub next_index: U32,
    pub done: U32,
}

/// XFER_HISTORY: ops of `epoch` on `channel` start at `start_op`, in the order sent.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HistoryBody {
    pub channel: U32,
    pub stream: U32,
    /// Position in the transfer stream (history items come first, then entries).
    pub index: U32,
    pub reserved: U32,
    pub epoch: U64,
    pub start_op: U64,
}

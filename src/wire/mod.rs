//! Zero-copy wire format.
//!
//! Every datagram is exactly one frame: a fixed 32-byte [`FrameHeader`], a batch of messages, and
//! a 32-byte [`AuthTrailer`] (two boot nonces and a 16-byte tag). Everything is little-endian and unaligned, so a received
//! buffer is viewed in place through `zerocopy` without copying. See `docs/PROTOCOL.md` for the
//! byte offset of every field.
//!
//! Decoding checks every length before it reads, never panics on any input, and never allocates:
//! the [`FrameReader`] hands out [`Msg`] values that borrow from the datagram.

mod codec;
mod layout;

pub use codec::{
    Entry, EntryIter, FrameBuilder, FrameReader, MAX_RUN_OP, Msg, MsgIter, UpdateView,
    codec_entry_iter, copy_short, encode_entry, entry_head_offsets, entry_wire_len, write_entry,
};
pub use layout::*;

use thiserror::Error;

/// Why a datagram was rejected. Each variant is counted separately by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("datagram shorter than the frame header and tag")]
    TooShort,
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("declared payload length does not match the datagram length")]
    LengthMismatch,
    #[error("message header or body runs past the payload")]
    Truncated,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message body length is wrong for its kind")]
    BadBodyLength,
    #[error("declared message count does not match the payload")]
    CountMismatch,
    #[error("entry inside an update is malformed")]
    BadEntry,
    #[error("field value out of range")]
    BadField,
}

#[cfg(test)]
mod tests;

//! Encoding into caller-owned buffers and validating, borrowing decode.

use super::WireError;
use super::layout::*;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// One decoded message. Bodies are copied out of the datagram (they are a few bytes); values
/// and entry lists borrow from it.
#[derive(Debug, Clone, Copy)]
pub enum Msg<'a> {
    Update(UpdateView<'a>),
    Ack(ChannelOp),
    FwdAck(ChannelOp),
    Commit(CommitBody),
    Nack(NackBody),
    Heartbeat(HeartbeatBody),
    LaQuery(ChannelOp),
    LaReply(LaReplyBody),
    ReplayBegin(BulkBegin),
    ReplayEntry(BulkEntry, &'a [u8]),
    ReplayEnd(BulkEnd),
    ReplayAck(BulkAck),
    XferBegin(BulkBegin),
    XferEntry(BulkEntry, &'a [u8]),
    XferEnd(BulkEnd),
    XferAck(BulkAck),
    XferHistory(HistoryBody),
    Submit(UpdateView<'a>),
}

/// A validated UPDATE: its entries are known to be well formed.
#[derive(Debug, Clone, Copy)]
pub struct UpdateView<'a> {
    pub fixed: UpdateFixed,
    pub flags: u8,
    /// Encoded public entries followed by private entries.
    pub entry_bytes: &'a [u8],
    /// Byte length of the public entries at the front of `entry_bytes`.
    pub public_len: usize,
}

impl<'a> UpdateView<'a> {
    pub fn channel(&self) -> u32 {
        self.fixed.channel.get()
    }
    pub fn op(&self) -> u64 {
        self.fixed.op.get()
    }
    pub fn cookie(&self) -> u64 {
        self.fixed.cookie.get()
    }
    pub fn entries(&self) -> EntryIter<'a> {
        EntryIter {
            bytes: self.entry_bytes,
            public_left: self.fixed.public_count.get(),
        }
    }
}

/// One decoded key/value write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub section: u8,
    pub key: u64,
    /// `None` deletes the key.
    pub value: Option<&'a [u8]>,
    /// Primary-only data: kept by standbys, never sent to clients.
    pub private: bool,
}

/// Iterates entries that were validated by [`validate_entries`].
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    bytes: &'a [u8],
    public_left: u16,
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Entry<'a>;
    fn next(&mut self) -> Option<Entry<'a>> {
        let (e, rest) = split_entry(self.bytes).ok()?;
        self.bytes = rest;
        let private = self.public_left == 0;
        self.public_left = self.public_left.saturating_sub(1);
        Some(Entry { private, ..e })
    }
}

fn split_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), WireError> {
    let (fixed, rest) = EntryFixed::read_from_prefix(bytes).map_err(|_| WireError::BadEntry)?;
    let vlen = fixed.value_len.get() as usize;
    if rest.len() < vlen
        || fixed.section as usize >= SECTIONS
        || fixed.flags & !ENTRY_FLAG_DELETE != 0
    {
        return Err(WireError::BadEntry);
    }
    let delete = fixed.flags & ENTRY_FLAG_DELETE != 0;
    if delete && vlen != 0 {
        return Err(WireError::BadEntry);
    }
    let (value, rest) = rest.split_at(vlen);
    let e = Entry {
        section: fixed.section,
        key: fixed.key.get(),
        value: (!delete).then_some(value),
        private: false,
    };
    Ok((e, rest))
}

/// Checks that `bytes` holds exactly `count` well-formed entries; returns the byte length of the
/// first `public` of them.
fn validate_entries(bytes: &[u8], public: u16, count: u32) -> Result<usize, WireError> {
    let mut rest = bytes;
    let mut public_len = 0;
    for i in 0..count {
        if i == public as u32 {
            public_len = bytes.len() - rest.len();
        }
        rest = split_entry(rest)?.1;
    }
    if count == public as u32 {
        public_len = bytes.len() - rest.len();
    }
    if !rest.is_empty() {
        return Err(WireError::BadEntry);
    }
    Ok(public_len)
}

/// Appends the wire encoding of one entry to `out`.
pub fn encode_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let start = out.len();
    out.resize(start + entry_wire_len(e.value.map_or(0, <[u8]>::len)), 0);
    write_entry(&mut out[start..], e);
}

/// Writes the wire encoding of one entry at the front of `out`, which must hold
/// [`entry_wire_len`] bytes for it; returns that length. The primary encodes each change once,
/// straight into its retention log, with this.
pub fn write_entry(out: &mut [u8], e: &Entry<'_>) -> usize {
    let value = e.value.unwrap_or(&[]);
    assert!(
        value.len() <= u16::MAX as usize,
        "entry value larger than 65535 bytes"
    );
    assert!((e.section as usize) < SECTIONS, "section out of range");
    let fixed = EntryFixed {
        section: e.section,
        flags: if e.value.is_none() {
            ENTRY_FLAG_DELETE
        } else {
            0
        },
        value_len: (value.len() as u16).into(),
        key: e.key.into(),
    };
    let (head, rest) = out.split_at_mut(size_of::<EntryFixed>());
    head.copy_from_slice(fixed.as_bytes());
    rest[..value.len()].copy_from_slice(value);
    size_of::<EntryFixed>() + value.len()
}

/// Bytes an entry takes on the wire.
pub fn entry_wire_len(value_len: usize) -> usize {
    size_of::<EntryFixed>() + value_len
}

/// A datagram that passed validation. Iterating its messages cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader<'a> {
    pub header: FrameHeader,
    payload: &'a [u8],
}

impl<'a> FrameReader<'a> {
    /// Validates the whole frame (header, every message, every entry) before anything is used,
    /// so a malformed frame is rejected as a unit and never half-applied.
    pub fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() < MIN_FRAME_BYTES || bytes.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooShort);
        }
        let (header, rest) =
            FrameHeader::read_from_prefix(bytes).map_err(|_| WireError::TooShort)?;
        if header.magic.get() != MAGIC {
            return Err(WireError::BadMagic);
        }
        if header.version != VERSION {
            return Err(WireError::BadVersion(header.version));
        }
        let payload_len = header.payload_len.get() as usize;
        // `rest` holds at least TRAILER_BYTES (checked above); subtracting cannot underflow,
        // whereas `payload_len + TRAILER_BYTES` overflows a 32-bit usize for a hostile
        // payload_len.
        if rest.len() - TRAILER_BYTES != payload_len {
            return Err(WireError::LengthMismatch);
        }
        let payload = &rest[..payload_len];
        let mut at = payload;
        let mut count = 0u32;
        while !at.is_empty() {
            let (_, tail) = parse_msg(at, Checks::Full)?;
            at = tail;
            count += 1;
        }
        if count != header.msg_count.get() as u32 {
            return Err(WireError::CountMismatch);
        }
        Ok(FrameReader { header, payload })
    }

    pub fn sender(&self) -> u32 {
        self.header.sender.get()
    }
    pub fn epoch(&self) -> u64 {
        self.header.epoch.get()
    }
    pub fn packet_seq(&self) -> u64 {
        self.header.packet_seq.get()
    }

    pub fn msgs(&self) -> MsgIter<'a> {
        MsgIter { at: self.payload }
    }

    /// Whether any message is of `kind`, from the message headers alone (no body is parsed):
    /// lets a receiver skip a pass over the frame for a kind that is rarely there.
    pub fn contains(&self, kind: Kind) -> bool {
        let mut at = self.payload;
        while let Ok((mh, rest)) = MsgHeader::read_from_prefix(at) {
            if mh.kind == kind as u8 {
                return true;
            }
            let Some(tail) = rest.get(mh.body_len.get() as usize..) else {
                return false;
            };
            at = tail;
        }
        false
    }
}

/// How much of a message [`parse_msg`] checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Everything, down to each entry: for a frame not yet validated.
    Full,
    /// The frame passed [`FrameReader::new`]: UPDATE entries are not walked again, unless
    /// the public/private split has to be found.
    Validated,
}

/// Messages of a validated frame.
#[derive(Debug, Clone)]
pub struct MsgIter<'a> {
    at: &'a [u8],
}

impl<'a> Iterator for MsgIter<'a> {
    type Item = Msg<'a>;
    fn next(&mut self) -> Option<Msg<'a>> {
        let (m, tail) = parse_msg(self.at, Checks::Validated).ok()?;
        self.at = tail;
        Some(m)
    }
}

fn fixed<T: FromBytes>(body: &[u8]) -> Result<T, WireError> {
    if body.len() != size_of::<T>() {
        return Err(WireError::BadBodyLength);
    }
    T::read_from_bytes(body).map_err(|_| WireError::BadBodyLength)
}

fn with_tail<T: FromBytes>(
    body: &[u8],
    tail_len: impl Fn(&T) -> usize,
) -> Result<(T, &[u8]), WireError> {
    let (t, rest) = T::read_from_prefix(body).map_err(|_| WireError::BadBodyLength)?;
    if rest.len() != tail_len(&t) {
        return Err(WireError::BadBodyLength);
    }
    Ok((t, rest))
}

fn bulk_entry(body: &[u8]) -> Result<(BulkEntry, &[u8]), WireError> {
    let (e, v) = with_tail::<BulkEntry>(body, |e| e.value_len.get() as usize)?;
    if e.section as usize >= SECTIONS || e.flags & !BULK_FLAG_PRIVATE != 0 {
        return Err(WireError::BadField);
    }
    Ok((e, v))
}

fn parse_msg(bytes: &[u8], checks: Checks) -> Result<(Msg<'_>, &[u8]), WireError> {
    let (mh, rest) = MsgHeader::read_from_prefix(bytes).map_err(|_| WireError::Truncated)?;
    let body_len = mh.body_len.get() as usize;
    if rest.len() < body_len {
        return Err(WireError::Truncated);
    }
    let (body, tail) = rest.split_at(body_len);
    let kind = Kind::from_u8(mh.kind).ok_or(WireError::UnknownKind(mh.kind))?;
    let msg = match kind {
        Kind::Update | Kind::Submit => {
            let (fx, entry_bytes) =
                UpdateFixed::read_from_prefix(body).map_err(|_| WireError::BadBodyLength)?;
            if mh.flags & !UPDATE_FLAG_PREAPPLIED != 0 {
                return Err(WireError::BadField);
            }
            let count = fx.public_count.get() as u32 + fx.private_count.get() as u32;
            let public_len = match (checks, fx.public_count.get(), fx.private_count.get()) {
                (Checks::Validated, _, 0) => entry_bytes.len(),
                (Checks::Validated, 0, _) => 0,
                _ => validate_entries(entry_bytes, fx.public_count.get(), count)?,
            };
            let view = UpdateView {
                fixed: fx,
                flags: mh.flags,
                entry_bytes,
                public_len,
            };
            if kind == Kind::Submit {
                Msg::Submit(view)
            } else {
                Msg::Update(view)
            }
        }
        Kind::Ack => Msg::Ack(fixed(body)?),
        Kind::FwdAck => Msg::FwdAck(fixed(body)?),
        Kind::Commit => Msg::Commit(fixed(body)?),
        Kind::Nack => {
            let n: NackBody = fixed(body)?;
            if n.from.get() > n.to.get() {
                return Err(WireError::BadField);
            }
            Msg::Nack(n)
        }
        Kind::Heartbeat => Msg::Heartbeat(fixed(body)?),
        Kind::LaQuery => Msg::LaQuery(fixed(body)?),
        Kind::LaReply => Msg::LaReply(fixed(body)?),
        Kind::ReplayBegin => Msg::ReplayBegin(fixed(body)?),
        Kind::ReplayEntry => {
            let (e, v) = bulk_entry(body)?;
            Msg::ReplayEntry(e, v)
        }
        Kind::ReplayEnd => Msg::ReplayEnd(fixed(body)?),
        Kind::ReplayAck => Msg::ReplayAck(fixed(body)?),
        Kind::XferBegin => Msg::XferBegin(fixed(body)?),
        Kind::XferEntry => {
            let (e, v) = bulk_entry(body)?;
            Msg::XferEntry(e, v)
        }
        Kind::XferEnd => Msg::XferEnd(fixed(body)?),
        Kind::XferAck => Msg::XferAck(fixed(body)?),
        Kind::XferHistory => Msg::XferHistory(fixed(body)?),
    };
    Ok((msg, tail))
}

/// Builds one frame in a caller-owned buffer. Every `push_*` returns `false`, writing nothing,
/// when the message does not fit; the caller then sends this frame and starts another.
#[derive(Debug)]
pub struct FrameBuilder<'a> {
    buf: &'a mut [u8],
    len: usize,
    count: u16,
}

impl<'a> FrameBuilder<'a> {
    pub fn new(buf: &'a mut [u8], sender: u32, epoch: u64, packet_seq: u64) -> Self {
        assert!(buf.len() >= MIN_FRAME_BYTES + 64, "frame buffer too small");
        let cap = buf.len().min(MAX_FRAME_BYTES);
        let buf = &mut buf[..cap];
        let h = FrameHeader {
            magic: MAGIC.into(),
            version: VERSION,
            flags: 0,
            msg_count: 0.into(),
            sender: sender.into(),
            payload_len: 0.into(),
            epoch: epoch.into(),
            packet_seq: packet_seq.into(),
        };
        buf[..HEADER_BYTES].copy_from_slice(h.as_bytes());
        FrameBuilder {
            buf,
            len: HEADER_BYTES,
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn count(&self) -> u16 {
        self.count
    }
    /// Bytes still free for messages (header and tag already accounted for).
    pub fn room(&self) -> usize {
        self.buf.len() - TRAILER_BYTES - self.len
    }

    fn push_parts(&mut self, kind: Kind, flags: u8, parts: &[&[u8]]) -> bool {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        if body_len > u16::MAX as usize
            || MSG_HEADER_BYTES + body_len > self.room()
            || self.count == u16::MAX
        {
            return false;
        }
        let mh = MsgHeader {
            kind: kind as u8,
            flags,
            body_len: (body_len as u16).into(),
        };
        let mut at = self.len;
        for p in std::iter::once(mh.as_bytes()).chain(parts.iter().copied()) {
            self.buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.len = at;
        self.count += 1;
        true
    }

    /// Pushes a message whose body is one fixed struct.
    pub fn push<T: IntoBytes + Immutable>(&mut self, kind: Kind, body: &T) -> bool {
        self.push_parts(kind, 0, &[body.as_bytes()])
    }

    /// Pushes a message whose body is a fixed struct followed by variable bytes.
    pub fn push_tail<T: IntoBytes + Immutable>(
        &mut self,
        kind: Kind,
        body: &T,
        tail: &[u8],
    ) -> bool {
        self.push_parts(kind, 0, &[body.as_bytes(), tail])
    }

    /// Pushes an UPDATE whose entries are already encoded (see [`encode_entry`]).
    pub fn push_update(
        &mut self,
        flags: u8,
        channel: u32,
        op: u64,
        cookie: u64,
        public: (&[u8], u16),
        private: (&[u8], u16),
    ) -> bool {
        self.push_change(Kind::Update, flags, channel, op, cookie, public, private)
    }

    /// Pushes a SUBMIT (a load client's change for the primary); `seq` is the submitter's own.
    pub fn push_submit(
        &mut self,
        channel: u32,
        seq: u64,
        public: (&[u8], u16),
        private: (&[u8], u16),
    ) -> bool {
        self.push_change(Kind::Submit, 0, channel, seq, 0, public, private)
    }

    #[allow(clippy::too_many_arguments)]
    fn push_change(
        &mut self,
        kind: Kind,
        flags: u8,
        channel: u32,
        op: u64,
        cookie: u64,
        public: (&[u8], u16),
        private: (&[u8], u16),
    ) -> bool {
        let fx = UpdateFixed {
            channel: channel.into(),
            public_count: public.1.into(),
            private_count: private.1.into(),
            op: op.into(),
            cookie: cookie.into(),
        };
        self.push_parts(kind, flags, &[fx.as_bytes(), public.0, private.0])
    }

    /// Writes the header counts and a zero tag; returns the datagram length.
    pub fn finish(self) -> usize {
        let payload_len = self.len - HEADER_BYTES;
        let end = self.len + TRAILER_BYTES;
        let (hb, _) = self.buf.split_at_mut(HEADER_BYTES);
        let h = FrameHeader::mut_from_bytes(hb).expect("header slice has header size");
        h.msg_count = self.count.into();
        h.payload_len = (payload_len as u32).into();
        self.buf[self.len..end].fill(0);
        end
    }
}

/// Iterates entries previously validated or encoded by us; every entry is reported as public
/// (the caller knows where the private ones start).
pub fn codec_entry_iter(bytes: &[u8]) -> EntryIter<'_> {
    EntryIter {
        bytes,
        public_left: u16::MAX,
    }
}

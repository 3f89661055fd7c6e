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
    /// As on the wire for an UPDATE; built from the run for an op of an UPDATE_RUN.
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
    /// The sections the op's public entries write: sent in an UPDATE, derived in a run.
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

/// Splits one entry off the front of `bytes`: its head byte, its value length (not for a
/// delete), its key in four bytes (eight with `ENTRY_HEAD_WIDE_KEY`, for a key past
/// `u32::MAX` only) and its value. Fixed-width fields: a walk over entries is a few loads and
/// one predictable branch per field, which matters because receivers walk each op's entries
/// more than once (validation, prefetch, apply).
#[inline(always)]
fn split_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), WireError> {
    let (&head, rest) = bytes.split_first().ok_or(WireError::BadEntry)?;
    let (vlen, rest) = if head & ENTRY_HEAD_DELETE != 0 {
        (None, rest)
    } else {
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(WireError::BadEntry)?;
        (Some(u16::from_le_bytes(*len) as usize), rest)
    };
    let (key, rest) = if head & ENTRY_HEAD_WIDE_KEY != 0 {
        let (k, rest) = rest.split_first_chunk::<8>().ok_or(WireError::BadEntry)?;
        let key = u64::from_le_bytes(*k);
        // One encoding per key: a key that fits four bytes is never sent in eight.
        if key <= u64::from(u32::MAX) {
            return Err(WireError::BadEntry);
        }
        (key, rest)
    } else {
        let (k, rest) = rest.split_first_chunk::<4>().ok_or(WireError::BadEntry)?;
        (u64::from(u32::from_le_bytes(*k)), rest)
    };
    let (value, rest) = match vlen {
        None => (None, rest),
        Some(n) => {
            let (v, rest) = rest.split_at_checked(n).ok_or(WireError::BadEntry)?;
            (Some(v), rest)
        }
    };
    let e = Entry {
        section: head & ENTRY_HEAD_SECTION,
        key,
        value,
        private: false,
    };
    Ok((e, rest))
}

/// Checks that `bytes` starts with `public + private` well-formed entries; returns the byte
/// length of the public ones, of all of them, and the cookie (the sections the public ones
/// write).
#[inline]
fn split_entries(
    bytes: &[u8],
    public: u16,
    private: u16,
) -> Result<(usize, usize, u64), WireError> {
    let mut rest = bytes;
    let mut cookie = 0u64;
    for _ in 0..public {
        let (e, tail) = split_entry(rest)?;
        cookie |= 1 << e.section;
        rest = tail;
    }
    let public_len = bytes.len() - rest.len();
    for _ in 0..private {
        rest = split_entry(rest)?.1;
    }
    Ok((public_len, bytes.len() - rest.len(), cookie))
}

/// Checks that `bytes` holds exactly `public + private` well-formed entries; returns the byte
/// length of the public ones.
fn validate_entries(bytes: &[u8], public: u16, private: u16) -> Result<usize, WireError> {
    let (public_len, len, _) = split_entries(bytes, public, private)?;
    if len != bytes.len() {
        return Err(WireError::BadEntry);
    }
    Ok(public_len)
}

/// Appends the wire encoding of one entry to `out`.
pub fn encode_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let start = out.len();
    out.resize(start + entry_wire_len(e), 0);
    write_entry(&mut out[start..], e);
}

/// Writes the wire encoding of one entry at the front of `out`, which must hold
/// [`entry_wire_len`] bytes for it; returns that length. The primary encodes each change once,
/// straight into its retention log, with this.
pub fn write_entry(out: &mut [u8], e: &Entry<'_>) -> usize {
    assert!((e.section as usize) < SECTIONS, "section out of range");
    let narrow = u32::try_from(e.key).ok();
    let mut head = e.section;
    if e.value.is_none() {
        head |= ENTRY_HEAD_DELETE;
    }
    if narrow.is_none() {
        head |= ENTRY_HEAD_WIDE_KEY;
    }
    out[0] = head;
    let mut at = 1;
    if let Some(value) = e.value {
        let vlen = u16::try_from(value.len()).expect("entry value larger than 65535 bytes");
        out[at..at + 2].copy_from_slice(&vlen.to_le_bytes());
        at += 2;
    }
    match narrow {
        Some(k) => {
            out[at..at + 4].copy_from_slice(&k.to_le_bytes());
            at += 4;
        }
        None => {
            out[at..at + 8].copy_from_slice(&e.key.to_le_bytes());
            at += 8;
        }
    }
    if let Some(value) = e.value {
        copy_short(&mut out[at..at + value.len()], value);
        at += value.len();
    }
    at
}

/// Copies `src` into `dst`, which must be as long. Values and encoded entries are a few dozen
/// bytes, and a call into `memcpy` (its size dispatch, and the registers the caller saves
/// around it) cost more than such a copy: up to 64 bytes this is two overlapping fixed-size
/// copies, inline.
#[inline(always)]
pub fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    assert_eq!(dst.len(), n, "copy_short: lengths differ");
    macro_rules! halves {
        ($w:literal) => {{
            dst[..$w].copy_from_slice(&src[..$w]);
            dst[n - $w..].copy_from_slice(&src[n - $w..]);
        }};
    }
    match n {
        65.. => dst.copy_from_slice(src),
        32..=64 => halves!(32),
        16..=31 => halves!(16),
        8..=15 => halves!(8),
        4..=7 => halves!(4),
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
    }
}

/// Bytes an entry takes on the wire.
pub fn entry_wire_len(e: &Entry<'_>) -> usize {
    let key = if e.key <= u64::from(u32::MAX) { 4 } else { 8 };
    1 + key + e.value.map_or(0, |v| 2 + v.len())
}

/// Offsets in `body` (of a well-formed UPDATE, SUBMIT or UPDATE_RUN) of each entry's head
/// byte, for fault injectors: flipping a head's delete or wide-key bit changes the entry's
/// length, which nearly always makes the frame malformed.
pub fn entry_head_offsets(kind: Kind, body: &[u8]) -> Vec<usize> {
    let mut heads = Vec::new();
    let mut walk = |mut at: &[u8], count: u32| -> Option<usize> {
        for _ in 0..count {
            heads.push(body.len() - at.len());
            at = split_entry(at).ok()?.1;
        }
        Some(body.len() - at.len())
    };
    match kind {
        Kind::Update | Kind::Submit => {
            if let Ok((fx, entries)) = UpdateFixed::read_from_prefix(body) {
                let count = u32::from(fx.public_count.get()) + u32::from(fx.private_count.get());
                walk(entries, count);
            }
        }
        Kind::UpdateRun => {
            let mut at = size_of::<RunFixed>();
            while let Some(&[public, private]) = body.get(at..at + 2) {
                let Some(end) = walk(&body[at + 2..], u32::from(public) + u32::from(private))
                else {
                    break;
                };
                at = end;
            }
        }
        _ => {}
    }
    heads
}

/// One op of an UPDATE_RUN, as an UPDATE of op `op`: its entry counts (one byte each), then
/// its entries, whose walk gives the op's length and its cookie.
#[inline(always)]
fn split_run_op(bytes: &[u8], channel: u32, op: u64) -> Result<(UpdateView<'_>, &[u8]), WireError> {
    let (&[public, private], entries) =
        bytes.split_first_chunk::<2>().ok_or(WireError::BadEntry)?;
    let (public, private) = (u16::from(public), u16::from(private));
    // Nearly every op of a router's churn writes one key: split it without the loops.
    let (public_len, len, cookie) = if (public, private) == (1, 0) {
        let (e, tail) = split_entry(entries)?;
        let len = entries.len() - tail.len();
        (len, len, 1 << e.section)
    } else {
        split_entries(entries, public, private)?
    };
    let (entry_bytes, rest) = entries.split_at(len);
    let fixed = UpdateFixed {
        channel: channel.into(),
        public_count: public.into(),
        private_count: private.into(),
        op: op.into(),
        cookie: cookie.into(),
    };
    let view = UpdateView {
        fixed,
        flags: 0,
        entry_bytes,
        public_len,
    };
    Ok((view, rest))
}

/// The ops of an UPDATE_RUN not yet handed out.
#[derive(Debug, Clone, Copy)]
struct RunCursor<'a> {
    channel: u32,
    next_op: u64,
    bytes: &'a [u8],
}

impl<'a> RunCursor<'a> {
    #[inline(always)]
    fn next_update(&mut self) -> Result<Option<UpdateView<'a>>, WireError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let (view, rest) = split_run_op(self.bytes, self.channel, self.next_op)?;
        self.bytes = rest;
        // Checked when the frame was validated: the last op of a run is at most
        // `MAX_RUN_OP`, so this never saturates for an op that is handed out.
        self.next_op = self.next_op.saturating_add(1);
        Ok(Some(view))
    }
}

/// Largest op ID an UPDATE_RUN may name: run op IDs are computed, so they are bounded here,
/// by `OpId::MAX`, the bound of every op ID from the network (a compile-time assertion in
/// `proto::ids` keeps the two equal).
pub const MAX_RUN_OP: u64 = 1 << 62;

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
        Self::new_visiting(bytes, |_| {})
    }

    /// [`FrameReader::new`], showing `visit` each UPDATE (each op of an UPDATE_RUN) as
    /// validation reaches it, in frame order. Validation parses every update anyway; a receiver
    /// that needs one more look at each (to start loading the state it will write) takes it
    /// here instead of parsing the frame once more. `visit` may see updates of a frame that
    /// is then rejected: use it for hints only.
    pub fn new_visiting(
        bytes: &'a [u8],
        mut visit: impl FnMut(&UpdateView<'a>),
    ) -> Result<Self, WireError> {
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
            let (_, tail) = parse_msg(at, Checks::Full(&mut visit))?;
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
        MsgIter {
            at: self.payload,
            run: None,
        }
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
enum Checks<'v, 'a> {
    /// Everything, down to each entry: for a frame not yet validated. Each update checked is
    /// shown to the visitor.
    Full(&'v mut dyn FnMut(&UpdateView<'a>)),
    /// The frame passed [`FrameReader::new`]: UPDATE entries are not walked again, unless
    /// the public/private split has to be found.
    Validated,
}

/// Messages of a validated frame. An UPDATE_RUN comes out as one [`Msg::Update`] per op, so a
/// receiver handles an update the same way whichever message carried it.
#[derive(Debug, Clone)]
pub struct MsgIter<'a> {
    at: &'a [u8],
    run: Option<RunCursor<'a>>,
}

impl<'a> Iterator for MsgIter<'a> {
    type Item = Msg<'a>;
    #[inline(always)]
    fn next(&mut self) -> Option<Msg<'a>> {
        loop {
            if let Some(r) = &mut self.run {
                if let Ok(Some(u)) = r.next_update() {
                    return Some(Msg::Update(u));
                }
                self.run = None;
            }
            let (p, tail) = parse_msg(self.at, Checks::Validated).ok()?;
            self.at = tail;
            match p {
                Parsed::Msg(m) => return Some(m),
                Parsed::Run(r) => self.run = Some(r),
            }
        }
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

/// One message as parsed: an UPDATE_RUN is handed out op by op by [`MsgIter`].
enum Parsed<'a> {
    Msg(Msg<'a>),
    Run(RunCursor<'a>),
}

fn parse_msg<'a>(
    bytes: &'a [u8],
    checks: Checks<'_, 'a>,
) -> Result<(Parsed<'a>, &'a [u8]), WireError> {
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
            let public_len = match (&checks, fx.public_count.get(), fx.private_count.get()) {
                (Checks::Validated, _, 0) => entry_bytes.len(),
                (Checks::Validated, 0, _) => 0,
                (_, public, private) => validate_entries(entry_bytes, public, private)?,
            };
            let view = UpdateView {
                fixed: fx,
                flags: mh.flags,
                entry_bytes,
                public_len,
            };
            if let (Checks::Full(visit), Kind::Update) = (checks, kind) {
                visit(&view);
            }
            if kind == Kind::Submit {
                Msg::Submit(view)
            } else {
                Msg::Update(view)
            }
        }
        Kind::UpdateRun => {
            if mh.flags != 0 {
                return Err(WireError::BadField);
            }
            let (fx, ops) =
                RunFixed::read_from_prefix(body).map_err(|_| WireError::BadBodyLength)?;
            if ops.is_empty() {
                return Err(WireError::BadBodyLength);
            }
            let first_op = fx.first_op.get();
            if first_op == 0 {
                return Err(WireError::BadField);
            }
            let run = RunCursor {
                channel: fx.channel.get(),
                next_op: first_op,
                bytes: ops,
            };
            if let Checks::Full(visit) = checks {
                // Every op well formed, and the last op ID in range (each op takes at least
                // two bytes, so a run holds fewer than 2^15 of them).
                let (mut walk, mut last_op) = (run, first_op);
                while let Some(u) = walk.next_update()? {
                    last_op = u.op();
                    visit(&u);
                }
                if last_op > MAX_RUN_OP {
                    return Err(WireError::BadField);
                }
            }
            return Ok((Parsed::Run(run), tail));
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
    Ok((Parsed::Msg(msg), tail))
}

/// Builds one frame in a caller-owned buffer. Every `push_*` returns `false`, writing nothing,
/// when the message does not fit; the caller then sends this frame and starts another.
#[derive(Debug)]
pub struct FrameBuilder<'a> {
    buf: &'a mut [u8],
    len: usize,
    count: u16,
    /// The UPDATE_RUN at the end of the frame, while the next op of its channel may join it.
    run: Option<OpenRun>,
}

/// An UPDATE_RUN still open for appending.
#[derive(Debug, Clone, Copy)]
struct OpenRun {
    /// Offset of its message header.
    at: usize,
    channel: u32,
    next_op: u64,
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
            run: None,
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
        // Any other message ends the open run: ops must follow their run's header.
        self.run = None;
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
        self.append(&[mh.as_bytes()]);
        self.append(parts);
        self.count += 1;
        true
    }

    /// Copies `parts` to the end of the frame; the caller checked that they fit.
    fn append(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.buf[self.len..self.len + p.len()].copy_from_slice(p);
            self.len += p.len();
        }
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

    /// Pushes op `op` of `channel` as an ordinary update, into the UPDATE_RUN at the end of the
    /// frame when it carries the op before (its op ID and cookie then cost nothing), else in a
    /// new run. Entries as in [`push_update`](Self::push_update).
    pub fn push_run_update(
        &mut self,
        channel: u32,
        op: u64,
        cookie: u64,
        public: (&[u8], u16),
        private: (&[u8], u16),
    ) -> bool {
        // Counts past a byte: an UPDATE of its own.
        let (Ok(n_public), Ok(n_private)) = (u8::try_from(public.1), u8::try_from(private.1))
        else {
            return self.push_update(0, channel, op, cookie, public, private);
        };
        let counts = [n_public, n_private];
        self.push_run_parts(channel, op, 1, &[&counts[..], public.0, private.0])
    }

    /// Room, in bytes of encoded ops, for an UPDATE_RUN that would carry op `op` of `channel`
    /// next: in the run open at the end of the frame if it carries the op before, else in a new
    /// one. What [`push_run_ops`](Self::push_run_ops) may push.
    pub fn run_room(&self, channel: u32, op: u64) -> usize {
        let max_body = u16::MAX as usize;
        match self.joinable_run(channel, op) {
            Some((_, body_len)) => self.room().min(max_body - body_len),
            None if self.count == u16::MAX => 0,
            None => (self
                .room()
                .saturating_sub(MSG_HEADER_BYTES + size_of::<RunFixed>()))
            .min(max_body - size_of::<RunFixed>()),
        }
    }

    /// Pushes `count` consecutive ops of `channel`, from op `op` on, already encoded as an
    /// UPDATE_RUN carries them: each its public and private entry counts (a byte each), then
    /// its entries, public first. The primary's retention log holds ops so, so a stretch of
    /// them goes into a frame in one copy. `ops` must be exactly that (a receiver rejects the
    /// whole frame otherwise) and at most [`run_room`](Self::run_room) bytes; `false`, writing
    /// nothing, when it does not fit.
    pub fn push_run_ops(&mut self, channel: u32, op: u64, count: u64, ops: &[u8]) -> bool {
        count > 0 && ops.len() <= self.run_room(channel, op) && {
            self.push_run_parts(channel, op, count, &[ops])
        }
    }

    /// The run open at the end of the frame and its body length, if op `op` of `channel` may
    /// join it.
    fn joinable_run(&self, channel: u32, op: u64) -> Option<(OpenRun, usize)> {
        let r = self
            .run
            .filter(|r| r.channel == channel && r.next_op == op)?;
        let blen_at = r.at + std::mem::offset_of!(MsgHeader, body_len);
        let body_len = u16::from_le_bytes([self.buf[blen_at], self.buf[blen_at + 1]]);
        Some((r, usize::from(body_len)))
    }

    /// Pushes `count` ops of `channel` from op `op` on, encoded in `parts`, into the open run
    /// if they may join it and fit, else in a new run.
    fn push_run_parts(&mut self, channel: u32, op: u64, count: u64, parts: &[&[u8]]) -> bool {
        let ops_len: usize = parts.iter().map(|p| p.len()).sum();
        if let Some((r, body_len)) = self.joinable_run(channel, op)
            && let Ok(new_len) = u16::try_from(body_len + ops_len)
            && ops_len <= self.room()
        {
            let blen_at = r.at + std::mem::offset_of!(MsgHeader, body_len);
            self.append(parts);
            self.buf[blen_at..blen_at + 2].copy_from_slice(&new_len.to_le_bytes());
            self.run = op
                .checked_add(count)
                .map(|next_op| OpenRun { next_op, ..r });
            return true;
        }
        let at = self.len;
        let fx = RunFixed {
            channel: channel.into(),
            first_op: op.into(),
        };
        let mut all: [&[u8]; 4] = [fx.as_bytes(), &[], &[], &[]];
        let Some(slots) = all.get_mut(1..=parts.len()) else {
            return false;
        };
        slots.copy_from_slice(parts);
        if !self.push_parts(Kind::UpdateRun, 0, &all[..=parts.len()]) {
            return false;
        }
        self.run = op.checked_add(count).map(|next_op| OpenRun {
            at,
            channel,
            next_op,
        });
        true
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

/// Iterates entries previously validated or encoded by us, the first `public_count` of them
/// public and the rest private.
pub fn codec_entry_iter(bytes: &[u8], public_count: u16) -> EntryIter<'_> {
    EntryIter {
        bytes,
        public_left: public_count,
    }
}

//! Frames and items of the peer protocol; the layout is described in the
//! module doc of [`crate::peer`]. Pure code: no I/O, so every decoding
//! path is unit-tested here against truncation and corruption.

use protobuf::Message as _;
use raft::eraftpb::Message;

/// First bytes of a handshake payload: tells a ferrokv peer from anything
/// else that connects to port 2380.
pub const MAGIC: [u8; 8] = *b"FKVPEER\0";
/// Protocol version spoken by this build.
pub const VERSION: u16 = 1;
/// `len u32 | crc32c u32`.
pub const HEADER_BYTES: usize = 8;
/// Bound on a handshake frame, tighter than `frame_bytes_max` so that an
/// unauthenticated connection cannot make us buffer megabytes.
pub const HANDSHAKE_BYTES_MAX: usize = 64 * 1024;
/// Bound on the client URLs carried in a handshake.
pub const CLIENT_URLS_MAX: usize = 64;

pub const FRAME_HELLO: u8 = 1;
pub const FRAME_WELCOME: u8 = 2;
pub const FRAME_REFUSED: u8 = 3;
pub const FRAME_BATCH: u8 = 4;
/// A joining member asks for the member list (no member id yet).
pub const FRAME_MEMBERS_QUERY: u8 = 5;
/// The answer to `FRAME_MEMBERS_QUERY`.
pub const FRAME_MEMBERS: u8 = 6;
/// A refusal because the dialer was removed from the cluster: a frame type
/// of its own, so the dialer recognises it without parsing prose.
pub const FRAME_REMOVED: u8 = 7;

pub const ITEM_RAFT: u8 = 1;
pub const ITEM_CALL: u8 = 2;
pub const ITEM_REPLY_OK: u8 = 3;
pub const ITEM_REPLY_ERR: u8 = 4;
pub const ITEM_PING: u8 = 5;
pub const ITEM_PONG: u8 = 6;

/// Encoded size of a call item around its body.
pub const CALL_ITEM_OVERHEAD: usize = 1 + 8 + 1 + 4;
/// Encoded size of a reply item around its body.
pub const REPLY_ITEM_OVERHEAD: usize = 1 + 8 + 4;
/// Encoded size of a raft item around the protobuf message.
pub const RAFT_ITEM_OVERHEAD: usize = 1 + 4 + 4;
/// Encoded size of a ping or pong item.
pub const PING_ITEM_BYTES: usize = 1 + 8;
/// Header plus frame type byte: the size of an empty batch.
pub const BATCH_OVERHEAD: usize = HEADER_BYTES + 1;
/// Largest member list body: a MEMBERS frame is a handshake frame, read
/// within `HANDSHAKE_BYTES_MAX` (header, type, cluster id, length).
pub const MEMBERS_BODY_MAX: usize = HANDSHAKE_BYTES_MAX - (HEADER_BYTES + 1 + 8 + 4);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch (computed crc32c {got:#010x}, header says {want:#010x})")]
    BadCrc { got: u32, want: u32 },
    #[error("connection ended inside a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
    #[error("undecodable frame: {0}")]
    Malformed(String),
    #[error(
        "protocol version {got} is not supported (this member speaks {})",
        VERSION
    )]
    Version { got: u16 },
}

fn malformed(what: &str) -> FrameError {
    FrameError::Malformed(what.to_string())
}

/// One complete frame at the start of `buf`: `Ok(Some((payload, consumed)))`,
/// `Ok(None)` when more bytes are needed, or an error once the header alone
/// shows the frame is bad (too large) or the payload fails its checksum.
/// `max` bounds the whole frame, header included.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let want = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let total = HEADER_BYTES.saturating_add(len);
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let payload = &buf[HEADER_BYTES..total];
    let got = crc32c::crc32c(payload);
    if got != want {
        return Err(FrameError::BadCrc { got, want });
    }
    Ok(Some((payload, total)))
}

/// What a stream that ended with `rest` unparsed left behind: nothing, or a
/// truncated (or bad) frame.
pub fn check_eof(rest: &[u8], max: usize) -> Result<(), FrameError> {
    if rest.is_empty() {
        return Ok(());
    }
    match decode_frame(rest, max)? {
        Some(_) => Ok(()),
        None => {
            let need = if rest.len() < HEADER_BYTES {
                HEADER_BYTES
            } else {
                HEADER_BYTES + u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize
            };
            Err(FrameError::Truncated {
                have: rest.len(),
                need,
            })
        }
    }
}

/// The sender's view of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
    pub shards: u32,
    pub name: String,
    pub client_urls: Vec<String>,
}

/// The acceptor's answer to a `Hello` it accepts: who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub cluster_id: u64,
    pub member_id: u64,
    pub shards: u32,
    pub name: String,
    pub client_urls: Vec<String>,
}

/// One item of a batch frame; byte fields borrow the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Raft { group: u32, msg: &'a [u8] },
    Call { id: u64, kind: u8, body: &'a [u8] },
    Reply { id: u64, ok: bool, body: &'a [u8] },
    Ping(u64),
    Pong(u64),
}

/// A decoded frame payload.
#[derive(Debug)]
pub enum Payload<'a> {
    Hello(Hello),
    Welcome(Welcome),
    Refused(String),
    Batch(Items<'a>),
    /// A member list query from a joining member with this shard count.
    MembersQuery {
        shards: u32,
    },
    /// The member list (opaque to the transport) of cluster `cluster_id`.
    Members {
        cluster_id: u64,
        body: &'a [u8],
    },
    /// The acceptor, member `member_id` of `cluster_id`, refused the dialer
    /// because the dialer was removed from the cluster.
    Removed {
        cluster_id: u64,
        member_id: u64,
        reason: String,
    },
}

/// Builds one frame in a reusable buffer: `begin`, items, `finish`.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the frame so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the batch holds no item yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= BATCH_OVERHEAD
    }

    fn begin(&mut self, frame_type: u8) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER_BYTES]);
        self.buf.push(frame_type);
    }

    pub fn begin_batch(&mut self) {
        self.begin(FRAME_BATCH);
    }

    /// Fills in the header; the returned bytes are the whole frame.
    pub fn finish(&mut self) -> &[u8] {
        let len = (self.buf.len() - HEADER_BYTES) as u32;
        let crc = crc32c::crc32c(&self.buf[HEADER_BYTES..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    /// Drops bytes after `len` (an item that failed to encode).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len.max(BATCH_OVERHEAD));
    }

    /// Releases a buffer grown by one large frame.
    pub fn shrink(&mut self, keep_bytes: usize) {
        if self.buf.capacity() > keep_bytes {
            self.buf.clear();
            self.buf.shrink_to(keep_bytes);
        }
    }

    fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes32(&mut self, b: &[u8]) {
        self.put_u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    /// A string of at most u16::MAX bytes (longer ones are cut at a char
    /// boundary: names and URLs are far shorter).
    fn put_str16(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.put_u16(end as u16);
        self.buf.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn put_urls(&mut self, urls: &[String]) {
        let n = urls.len().min(CLIENT_URLS_MAX);
        self.put_u16(n as u16);
        for u in &urls[..n] {
            self.put_str16(u);
        }
    }

    pub fn hello(&mut self, h: &Hello) -> &[u8] {
        self.begin(FRAME_HELLO);
        self.buf.extend_from_slice(&MAGIC);
        self.put_u16(VERSION);
        self.put_u64(h.cluster_id);
        self.put_u64(h.from);
        self.put_u64(h.to);
        self.put_u32(h.shards);
        self.put_str16(&h.name);
        self.put_urls(&h.client_urls);
        self.finish()
    }

    pub fn welcome(&mut self, w: &Welcome) -> &[u8] {
        self.begin(FRAME_WELCOME);
        self.buf.extend_from_slice(&MAGIC);
        self.put_u16(VERSION);
        self.put_u64(w.cluster_id);
        self.put_u64(w.member_id);
        self.put_u32(w.shards);
        self.put_str16(&w.name);
        self.put_urls(&w.client_urls);
        self.finish()
    }

    pub fn refused(&mut self, reason: &str) -> &[u8] {
        self.begin(FRAME_REFUSED);
        self.put_str16(reason);
        self.finish()
    }

    pub fn removed(&mut self, cluster_id: u64, member_id: u64, reason: &str) -> &[u8] {
        self.begin(FRAME_REMOVED);
        self.put_u64(cluster_id);
        self.put_u64(member_id);
        self.put_str16(reason);
        self.finish()
    }

    pub fn members_query(&mut self, shards: u32) -> &[u8] {
        self.begin(FRAME_MEMBERS_QUERY);
        self.buf.extend_from_slice(&MAGIC);
        self.put_u16(VERSION);
        self.put_u32(shards);
        self.finish()
    }

    /// The body must be at most `MEMBERS_BODY_MAX` bytes (checked where it
    /// is set) for the frame to fit the handshake bound.
    pub fn members(&mut self, cluster_id: u64, body: &[u8]) -> &[u8] {
        self.begin(FRAME_MEMBERS);
        self.put_u64(cluster_id);
        self.put_bytes32(body);
        self.finish()
    }

    /// Appends a raft message whose size was computed by `raft_item_bytes`
    /// (protobuf caches it in the message).
    pub fn put_raft(&mut self, group: u32, msg: &Message) -> Result<(), String> {
        self.put_u8(ITEM_RAFT);
        self.put_u32(group);
        let size = msg.get_cached_size();
        self.put_u32(size);
        let before = self.buf.len();
        {
            let mut os = protobuf::CodedOutputStream::vec(&mut self.buf);
            msg.write_to_with_cached_sizes(&mut os)
                .and_then(|()| os.flush())
                .map_err(|e| format!("raft message does not encode: {e}"))?;
        }
        let written = self.buf.len() - before;
        if written != size as usize {
            return Err(format!(
                "raft message encoded to {written} bytes, {size} expected"
            ));
        }
        Ok(())
    }

    pub fn put_call(&mut self, id: u64, kind: u8, body: &[u8]) {
        self.put_u8(ITEM_CALL);
        self.put_u64(id);
        self.put_u8(kind);
        self.put_bytes32(body);
    }

    pub fn put_reply(&mut self, id: u64, reply: Result<&[u8], &str>) {
        let (tag, body) = match reply {
            Ok(b) => (ITEM_REPLY_OK, b),
            Err(e) => (ITEM_REPLY_ERR, e.as_bytes()),
        };
        self.put_u8(tag);
        self.put_u64(id);
        self.put_bytes32(body);
    }

    pub fn put_ping(&mut self, nonce: u64) {
        self.put_u8(ITEM_PING);
        self.put_u64(nonce);
    }

    pub fn put_pong(&mut self, nonce: u64) {
        self.put_u8(ITEM_PONG);
        self.put_u64(nonce);
    }
}

/// Encoded size of a raft item; computes (and caches in `msg`) its size.
pub fn raft_item_bytes(msg: &Message) -> usize {
    RAFT_ITEM_OVERHEAD + msg.compute_size() as usize
}

/// Reads fields off a payload; every read checks the bytes are there.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if self.b.len() < n {
            return Err(FrameError::Malformed(format!("{what} is truncated")));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
    fn bytes32(&mut self, what: &str) -> Result<&'a [u8], FrameError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn str16(&mut self, what: &str) -> Result<String, FrameError> {
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FrameError::Malformed(format!("{what} is not UTF-8")))
    }
    fn urls(&mut self) -> Result<Vec<String>, FrameError> {
        let n = self.u16("client url count")? as usize;
        if n > CLIENT_URLS_MAX {
            return Err(FrameError::Malformed(format!(
                "{n} client urls (at most {CLIENT_URLS_MAX})"
            )));
        }
        (0..n).map(|_| self.str16("client url")).collect()
    }
    fn magic_version(&mut self) -> Result<(), FrameError> {
        if self.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(malformed("not a ferrokv peer (bad magic)"));
        }
        let got = self.u16("version")?;
        if got != VERSION {
            return Err(FrameError::Version { got });
        }
        Ok(())
    }
    fn end(&self, what: &str) -> Result<(), FrameError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(format!(
                "{} stray bytes after the {what}",
                self.b.len()
            )))
        }
    }
}

/// Decodes a frame payload (as returned by `decode_frame`). Batch items are
/// decoded lazily by iterating `Items`.
pub fn decode_payload(p: &[u8]) -> Result<Payload<'_>, FrameError> {
    let Some((&frame_type, rest)) = p.split_first() else {
        return Err(malformed("empty frame"));
    };
    let mut c = Cursor { b: rest };
    match frame_type {
        FRAME_HELLO => {
            c.magic_version()?;
            let h = Hello {
                cluster_id: c.u64("cluster id")?,
                from: c.u64("sender id")?,
                to: c.u64("receiver id")?,
                shards: c.u32("shard count")?,
                name: c.str16("name")?,
                client_urls: c.urls()?,
            };
            c.end("handshake")?;
            Ok(Payload::Hello(h))
        }
        FRAME_WELCOME => {
            c.magic_version()?;
            let w = Welcome {
                cluster_id: c.u64("cluster id")?,
                member_id: c.u64("member id")?,
                shards: c.u32("shard count")?,
                name: c.str16("name")?,
                client_urls: c.urls()?,
            };
            c.end("handshake answer")?;
            Ok(Payload::Welcome(w))
        }
        FRAME_REFUSED => {
            let reason = c.str16("refusal reason")?;
            c.end("refusal")?;
            Ok(Payload::Refused(reason))
        }
        FRAME_BATCH => Ok(Payload::Batch(Items { c })),
        FRAME_MEMBERS_QUERY => {
            c.magic_version()?;
            let shards = c.u32("shard count")?;
            c.end("member list query")?;
            Ok(Payload::MembersQuery { shards })
        }
        FRAME_MEMBERS => {
            let cluster_id = c.u64("cluster id")?;
            let body = c.bytes32("member list")?;
            c.end("member list")?;
            Ok(Payload::Members { cluster_id, body })
        }
        FRAME_REMOVED => {
            let cluster_id = c.u64("cluster id")?;
            let member_id = c.u64("member id")?;
            let reason = c.str16("refusal reason")?;
            c.end("refusal")?;
            Ok(Payload::Removed {
                cluster_id,
                member_id,
                reason,
            })
        }
        t => Err(FrameError::Malformed(format!("unknown frame type {t}"))),
    }
}

/// The items of a batch payload, in order.
#[derive(Debug)]
pub struct Items<'a> {
    c: Cursor<'a>,
}

impl std::fmt::Debug for Cursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({} bytes left)", self.b.len())
    }
}

impl<'a> Items<'a> {
    fn item(&mut self) -> Result<Item<'a>, FrameError> {
        let c = &mut self.c;
        Ok(match c.u8("item tag")? {
            ITEM_RAFT => Item::Raft {
                group: c.u32("raft item group")?,
                msg: c.bytes32("raft message")?,
            },
            ITEM_CALL => Item::Call {
                id: c.u64("call id")?,
                kind: c.u8("call kind")?,
                body: c.bytes32("call body")?,
            },
            ITEM_REPLY_OK => Item::Reply {
                id: c.u64("reply id")?,
                ok: true,
                body: c.bytes32("reply body")?,
            },
            ITEM_REPLY_ERR => Item::Reply {
                id: c.u64("reply id")?,
                ok: false,
                body: c.bytes32("reply error")?,
            },
            ITEM_PING => Item::Ping(c.u64("ping")?),
            ITEM_PONG => Item::Pong(c.u64("pong")?),
            t => return Err(FrameError::Malformed(format!("unknown item tag {t}"))),
        })
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.c.b.is_empty() {
            return None;
        }
        let r = self.item();
        if r.is_err() {
            // One bad item spoils the rest: stop there.
            self.c.b = &[];
        }
        Some(r)
    }
}

/// Decodes the protobuf of a raft item.
pub fn parse_raft(msg: &[u8]) -> Result<Message, FrameError> {
    Message::parse_from_bytes(msg)
        .map_err(|e| FrameError::Malformed(format!("raft message does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::eraftpb::{Entry, MessageType};

    const MAX: usize = 1 << 20;

    #[derive(Debug, Clone, PartialEq)]
    enum Owned {
        Raft { group: u32, msg: Message },
        Call { id: u64, kind: u8, body: Vec<u8> },
        Reply { id: u64, ok: bool, body: Vec<u8> },
        Ping(u64),
        Pong(u64),
    }

    fn raft_msg(from: u64, to: u64, term: u64, entries: Vec<Vec<u8>>) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = from;
        m.to = to;
        m.term = term;
        m.index = term.wrapping_mul(3);
        for (i, data) in entries.into_iter().enumerate() {
            let mut e = Entry::default();
            e.index = i as u64 + 1;
            e.term = term;
            e.data = data.into();
            m.entries.push(e);
        }
        m
    }

    fn owned() -> impl Strategy<Value = Owned> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            (
                any::<u32>(),
                1..10u64,
                1..10u64,
                any::<u64>(),
                proptest::collection::vec(bytes(), 0..4)
            )
                .prop_map(|(group, from, to, term, entries)| Owned::Raft {
                    group,
                    msg: raft_msg(from, to, term, entries),
                }),
            (any::<u64>(), any::<u8>(), bytes()).prop_map(|(id, kind, body)| Owned::Call {
                id,
                kind,
                body
            }),
            (any::<u64>(), bytes()).prop_map(|(id, body)| Owned::Reply { id, ok: true, body }),
            (any::<u64>(), "[a-z ]{0,20}").prop_map(|(id, s)| Owned::Reply {
                id,
                ok: false,
                body: s.into_bytes()
            }),
            any::<u64>().prop_map(Owned::Ping),
            any::<u64>().prop_map(Owned::Pong),
        ]
    }

    fn encode(items: &[Owned]) -> Vec<u8> {
        let mut fb = FrameBuf::new();
        fb.begin_batch();
        for it in items {
            match it {
                Owned::Raft { group, msg } => {
                    raft_item_bytes(msg);
                    fb.put_raft(*group, msg).unwrap();
                }
                Owned::Call { id, kind, body } => fb.put_call(*id, *kind, body),
                Owned::Reply { id, ok: true, body } => fb.put_reply(*id, Ok(body)),
                Owned::Reply {
                    id,
                    ok: false,
                    body,
                } => fb.put_reply(*id, Err(std::str::from_utf8(body).unwrap())),
                Owned::Ping(n) => fb.put_ping(*n),
                Owned::Pong(n) => fb.put_pong(*n),
            }
        }
        fb.finish().to_vec()
    }

    fn decode(frame: &[u8]) -> Result<Vec<Owned>, FrameError> {
        let (payload, used) = decode_frame(frame, MAX)?.ok_or(FrameError::Truncated {
            have: frame.len(),
            need: 0,
        })?;
        assert_eq!(used, frame.len());
        let Payload::Batch(items) = decode_payload(payload)? else {
            return Err(malformed("not a batch"));
        };
        items
            .map(|it| {
                Ok(match it? {
                    Item::Raft { group, msg } => Owned::Raft {
                        group,
                        msg: parse_raft(msg)?,
                    },
                    Item::Call { id, kind, body } => Owned::Call {
                        id,
                        kind,
                        body: body.to_vec(),
                    },
                    Item::Reply { id, ok, body } => Owned::Reply {
                        id,
                        ok,
                        body: body.to_vec(),
                    },
                    Item::Ping(n) => Owned::Ping(n),
                    Item::Pong(n) => Owned::Pong(n),
                })
            })
            .collect()
    }

    /// Decoding `bytes` as a whole stream: frames until the end, then EOF.
    fn decode_stream(bytes: &[u8]) -> Result<usize, FrameError> {
        let mut rest = bytes;
        let mut n = 0;
        while let Some((_, used)) = decode_frame(rest, MAX)? {
            rest = &rest[used..];
            n += 1;
        }
        check_eof(rest, MAX)?;
        Ok(n)
    }

    proptest! {
        #[test]
        fn batch_round_trip(items in proptest::collection::vec(owned(), 0..20)) {
            let frame = encode(&items);
            prop_assert_eq!(decode(&frame)?, items);
        }

        #[test]
        fn every_truncation_is_rejected(items in proptest::collection::vec(owned(), 1..6)) {
            let frame = encode(&items);
            for cut in 1..frame.len() {
                prop_assert_eq!(decode_frame(&frame[..cut], MAX)?, None);
                let err = decode_stream(&frame[..cut]).unwrap_err();
                let is_truncated = matches!(err, FrameError::Truncated { .. });
                prop_assert!(is_truncated, "cut {}: {:?}", cut, err);
            }
            prop_assert_eq!(decode_stream(&frame)?, 1);
            prop_assert_eq!(decode_stream(&[])?, 0);
        }

        #[test]
        fn a_flipped_bit_is_rejected(
            items in proptest::collection::vec(owned(), 1..6),
            at in any::<prop::sample::Index>(),
            bit in 0..8u8,
        ) {
            let mut frame = encode(&items);
            let i = at.index(frame.len());
            frame[i] ^= 1 << bit;
            prop_assert!(decode_stream(&frame).is_err(), "flip at {} bit {}", i, bit);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_stream(&bytes);
            // With a valid checksum around it, garbage reaches the payload decoder.
            let mut framed = ((bytes.len()) as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
            framed.extend_from_slice(&bytes);
            if let Ok(Some((p, _))) = decode_frame(&framed, MAX) {
                if let Ok(Payload::Batch(items)) = decode_payload(p) {
                    for it in items {
                        if let Ok(Item::Raft { msg, .. }) = it {
                            let _ = parse_raft(msg);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn handshake_round_trip() {
        let h = Hello {
            cluster_id: 0xdead_beef,
            from: 1,
            to: 2,
            shards: 4,
            name: "infra1".into(),
            client_urls: vec!["http://127.0.0.1:2379".into(), "http://[::1]:2379".into()],
        };
        let mut fb = FrameBuf::new();
        let frame = fb.hello(&h).to_vec();
        let (p, _) = decode_frame(&frame, HANDSHAKE_BYTES_MAX).unwrap().unwrap();
        match decode_payload(p).unwrap() {
            Payload::Hello(got) => assert_eq!(got, h),
            other => panic!("{other:?}"),
        }
        let w = Welcome {
            cluster_id: 7,
            member_id: 2,
            shards: 4,
            name: "infra2".into(),
            client_urls: vec![],
        };
        let frame = fb.welcome(&w).to_vec();
        let (p, _) = decode_frame(&frame, HANDSHAKE_BYTES_MAX).unwrap().unwrap();
        match decode_payload(p).unwrap() {
            Payload::Welcome(got) => assert_eq!(got, w),
            other => panic!("{other:?}"),
        }
        let frame = fb.refused("go away").to_vec();
        let (p, _) = decode_frame(&frame, HANDSHAKE_BYTES_MAX).unwrap().unwrap();
        match decode_payload(p).unwrap() {
            Payload::Refused(r) => assert_eq!(r, "go away"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn membership_frames_round_trip_and_reject_truncation() {
        let mut fb = FrameBuf::new();
        let body: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let frames = [
            fb.members_query(3).to_vec(),
            fb.members(0xfeed, &body).to_vec(),
            fb.members(1, &[]).to_vec(),
            fb.removed(0xfeed, 7, "member 2 has been permanently removed")
                .to_vec(),
        ];
        let check = |i: usize, p: Payload<'_>| match (i, p) {
            (0, Payload::MembersQuery { shards: 3 }) => {}
            (
                1,
                Payload::Members {
                    cluster_id,
                    body: b,
                },
            ) => {
                assert_eq!((cluster_id, b), (0xfeed, &body[..]))
            }
            (
                2,
                Payload::Members {
                    cluster_id,
                    body: b,
                },
            ) => {
                assert_eq!((cluster_id, b.len()), (1, 0))
            }
            (
                3,
                Payload::Removed {
                    cluster_id,
                    member_id,
                    reason,
                },
            ) => {
                assert_eq!((cluster_id, member_id), (0xfeed, 7));
                assert_eq!(reason, "member 2 has been permanently removed");
            }
            (i, other) => panic!("frame {i}: {other:?}"),
        };
        for (i, f) in frames.iter().enumerate() {
            let (p, used) = decode_frame(f, HANDSHAKE_BYTES_MAX).unwrap().unwrap();
            assert_eq!(used, f.len());
            check(i, decode_payload(p).unwrap());
            // Every shorter payload (with a valid checksum) is malformed,
            // never a panic; a stray byte too.
            for cut in 0..p.len() {
                assert!(decode_payload(&p[..cut]).is_err(), "frame {i} cut {cut}");
            }
            let mut longer = p.to_vec();
            longer.push(0);
            assert!(decode_payload(&longer).is_err(), "frame {i} longer");
        }
        // A query of another protocol version is refused by version.
        let mut q = fb.members_query(1).to_vec();
        q[HEADER_BYTES + 1 + MAGIC.len()] = 2;
        assert_eq!(
            decode_payload(&q[HEADER_BYTES..]).unwrap_err(),
            FrameError::Version { got: 2 }
        );
        // The largest body fits a handshake frame exactly.
        let f = fb.members(1, &vec![0; MEMBERS_BODY_MAX]).to_vec();
        assert_eq!(f.len(), HANDSHAKE_BYTES_MAX);
        assert!(decode_frame(&f, HANDSHAKE_BYTES_MAX).unwrap().is_some());
    }

    #[test]
    fn other_versions_and_magic_are_refused() {
        let mut fb = FrameBuf::new();
        let mut frame = fb
            .hello(&Hello {
                cluster_id: 1,
                from: 1,
                to: 2,
                shards: 1,
                name: String::new(),
                client_urls: vec![],
            })
            .to_vec();
        // version field follows type byte and magic
        let v = HEADER_BYTES + 1 + MAGIC.len();
        frame[v] = 9;
        let crc = crc32c::crc32c(&frame[HEADER_BYTES..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let (p, _) = decode_frame(&frame, MAX).unwrap().unwrap();
        assert_eq!(
            decode_payload(p).unwrap_err(),
            FrameError::Version { got: 9 }
        );
        frame[HEADER_BYTES + 1] = b'X';
        let crc = crc32c::crc32c(&frame[HEADER_BYTES..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let (p, _) = decode_frame(&frame, MAX).unwrap().unwrap();
        assert!(matches!(
            decode_payload(p).unwrap_err(),
            FrameError::Malformed(m) if m.contains("bad magic")
        ));
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut hdr = ((MAX as u32) + 1).to_le_bytes().to_vec();
        hdr.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame(&hdr, MAX),
            Err(FrameError::TooLarge { .. })
        ));
        // u32::MAX does not overflow on 32-bit targets either.
        let mut hdr = u32::MAX.to_le_bytes().to_vec();
        hdr.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_frame(&hdr, MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn item_sizes_match_the_constants() {
        let mut fb = FrameBuf::new();
        fb.begin_batch();
        assert_eq!(fb.len(), BATCH_OVERHEAD);
        assert!(fb.is_empty());
        fb.put_call(1, 2, b"abc");
        assert_eq!(fb.len(), BATCH_OVERHEAD + CALL_ITEM_OVERHEAD + 3);
        fb.begin_batch();
        fb.put_reply(1, Ok(b"abcd"));
        assert_eq!(fb.len(), BATCH_OVERHEAD + REPLY_ITEM_OVERHEAD + 4);
        fb.begin_batch();
        fb.put_ping(5);
        assert_eq!(fb.len(), BATCH_OVERHEAD + PING_ITEM_BYTES);
        let m = raft_msg(1, 2, 3, vec![b"x".to_vec()]);
        fb.begin_batch();
        let n = raft_item_bytes(&m);
        fb.put_raft(0, &m).unwrap();
        assert_eq!(fb.len(), BATCH_OVERHEAD + n);
    }
}

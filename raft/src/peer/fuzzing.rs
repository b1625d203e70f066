//! Entry points for the fuzz targets (`fuzz/`) and the stable-Rust replay
//! of their corpora (`tests/tests/fuzz_corpus.rs`): what a peer (or
//! anything else that connects to the peer port) sends. Each panics only
//! on a bug; the seeds are made by the real encoders.

use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

use super::frame::{
    check_eof, decode_frame, decode_payload, parse_raft, raft_item_bytes, FrameBuf, Hello, Item,
    Payload, Welcome, HANDSHAKE_BYTES_MAX,
};

/// The frame limit the fuzz targets read with: the handshake bound, which
/// is also far above what a fuzz input holds, so that frames are decoded
/// and not refused as too large.
const FRAME_MAX: usize = HANDSHAKE_BYTES_MAX;

/// A byte stream as a connection reads it: frames (length, crc32c,
/// payload) back to back, each payload decoded, then the end of stream.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    loop {
        match decode_frame(rest, FRAME_MAX) {
            Ok(Some((p, used))) => {
                assert!(used <= rest.len() && p.len() < used);
                payload(p);
                rest = &rest[used..];
            }
            Ok(None) => {
                assert_eq!(check_eof(rest, FRAME_MAX).is_ok(), rest.is_empty());
                return;
            }
            Err(_) => return,
        }
    }
}

/// One frame payload (past its checksum): the frame, every batch item and
/// every raft message in it.
pub fn payload(data: &[u8]) {
    let Ok(Payload::Batch(items)) = decode_payload(data) else {
        return;
    };
    for item in items {
        let Ok(Item::Raft { msg, .. }) = item else {
            continue;
        };
        // Not compared after a round trip: protobuf keeps a field of the
        // wrong wire type as an unknown field and writes it back after the
        // known ones, so a re-encoded message need not decode equal (found
        // by fuzzing; harmless, received messages are stepped, not sent on).
        if let Ok(m) = parse_raft(msg) {
            m.write_to_bytes().expect("a decoded message encodes");
        }
    }
}

/// Whole frames of every type, as members send them.
pub fn seed_frames() -> Vec<Vec<u8>> {
    let mut fb = FrameBuf::new();
    let urls = vec!["http://127.0.0.1:2379".to_string()];
    let mut out = vec![
        fb.hello(&Hello {
            cluster_id: 0x1234,
            from: 1,
            to: 2,
            shards: 2,
            name: "m1".into(),
            client_urls: urls.clone(),
        })
        .to_vec(),
        fb.welcome(&Welcome {
            cluster_id: 0x1234,
            member_id: 2,
            shards: 2,
            name: "m2".into(),
            client_urls: urls,
        })
        .to_vec(),
        fb.refused("cluster id mismatch").to_vec(),
        fb.removed(0x1234, 3, "member removed").to_vec(),
        fb.members_query(2).to_vec(),
        fb.members(0x1234, b"member list body").to_vec(),
    ];
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    msg.from = 1;
    msg.to = 2;
    msg.term = 3;
    msg.index = 7;
    msg.log_term = 3;
    msg.commit = 6;
    let mut e = Entry::default();
    e.index = 8;
    e.term = 3;
    e.data = b"entry data".to_vec().into();
    msg.entries.push(e);
    raft_item_bytes(&msg);
    fb.begin_batch();
    fb.put_raft(0, &msg).expect("a raft message encodes");
    fb.put_call(9, 1, b"call body");
    fb.put_reply(9, Ok(b"reply"));
    fb.put_reply(10, Err("failed"));
    fb.put_ping(11);
    fb.put_pong(11);
    out.push(fb.finish().to_vec());
    // Two frames in one stream, as a connection reads them.
    let stream = [out[0].clone(), out[6].clone()].concat();
    out.push(stream);
    out
}

/// The payloads of `seed_frames`, without their headers.
pub fn seed_payloads() -> Vec<Vec<u8>> {
    seed_frames()
        .into_iter()
        .filter_map(|f| Some(decode_frame(&f, FRAME_MAX).ok()??.0.to_vec()))
        .collect()
}

//! gRPC framing: length-prefixed messages in HTTP/2 bodies, and the status
//! carried in `grpc-status` / `grpc-message`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// gRPC status codes used by etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The name Go's `codes.Code.String()` gives, as `rpc error: code =
    /// ... desc = ...` texts show it (the variants are named as Go's).
    pub fn name(self) -> String {
        match self {
            Code::Ok => "OK".to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// A gRPC error status as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Prefix one message with gRPC's 5-byte header (uncompressed, length).
pub fn encode_frame<M: prost::Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer sized by encoded_len cannot run out of room.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// Incremental decoder of length-prefixed messages from body chunks.
pub struct FrameDecoder {
    buf: BytesMut,
    max_message_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_message_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_message_bytes,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if buffered. A message over the limit or
    /// a compressed one is an error the client hears as grpc-go words it.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if compressed != 0 {
            return Err(Status::new(
                Code::Unimplemented,
                "grpc: compressed messages are not supported",
            ));
        }
        if len > self.max_message_bytes {
            return Err(message_too_large(len, self.max_message_bytes));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes received that do not form a whole message (a truncated body).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A message over the server's receive limit, in grpc-go's words.
pub fn message_too_large(len: usize, max: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("grpc: received message larger than max ({len} vs. {max})"),
    )
}

/// Decode a protobuf message; a malformed one is etcd's/grpc-go's Internal error.
pub fn decode<M: prost::Message + Default>(bytes: Bytes) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| {
        Status::new(
            Code::Internal,
            format!("grpc: error unmarshalling request: {e}"),
        )
    })
}

/// Percent-encode a grpc-message value as the gRPC spec requires.
pub fn encode_message_header(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::PutRequest;

    #[test]
    fn frames_round_trip_across_chunk_boundaries() {
        let req = PutRequest {
            key: Bytes::from_static(b"foo"),
            value: Bytes::from_static(b"bar"),
            ..Default::default()
        };
        let frame = encode_frame(&req);
        let mut dec = FrameDecoder::new(1024);
        for b in frame.iter().chain(frame.iter()) {
            dec.push(&[*b]);
        }
        let a: PutRequest = decode(dec.next_message().unwrap().unwrap()).unwrap();
        let b: PutRequest = decode(dec.next_message().unwrap().unwrap()).unwrap();
        assert_eq!(a, req);
        assert_eq!(b, req);
        assert!(dec.next_message().unwrap().is_none());
        assert!(!dec.has_partial());
    }

    #[test]
    fn oversize_message_is_resource_exhausted_in_grpc_words() {
        let mut dec = FrameDecoder::new(10);
        dec.push(&[0, 0, 0, 0, 11]);
        let err = dec.next_message().unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert_eq!(
            err.message,
            "grpc: received message larger than max (11 vs. 10)"
        );
    }

    #[test]
    fn garbage_protobuf_is_an_error_not_a_panic() {
        let err = decode::<PutRequest>(Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err();
        assert_eq!(err.code, Code::Internal);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(encode_message_header("a b%\n"), "a b%25%0A");
    }
}

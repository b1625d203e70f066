//! Sans-IO record framing.
//!
//! ```text
//! +-----------+--------------+-----------+-----------------+
//! | len u32LE | crc32c u32LE | lsn u64LE | payload (len B) |
//! +-----------+--------------+-----------+-----------------+
//! crc32c covers lsn bytes ++ payload.
//! ```
//!
//! A header of 16 zero bytes (or the end of the buffer) marks the end of the
//! written data: DMA writes pad the last block with zeros and segments are
//! preallocated with zeros. A real record never has an all-zero header
//! because its lsn is at least 1.

/// Bytes of the record header.
pub const HEADER_LEN: usize = 16;
/// Largest payload one record can carry (`len` is a u32).
pub const PAYLOAD_LEN_MAX: usize = u32::MAX as usize;

/// Total bytes a record with `payload_len` payload bytes occupies.
pub const fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&lsn.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Encodes one record into `out`, which must be exactly
/// `encoded_len(payload.len())` bytes long.
pub fn encode_into(lsn: u64, payload: &[u8], out: &mut [u8]) {
    assert!(lsn >= 1, "lsn 0 is reserved for 'end of data'");
    assert!(payload.len() <= PAYLOAD_LEN_MAX);
    assert_eq!(out.len(), encoded_len(payload.len()));
    out[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[4..8].copy_from_slice(&checksum(lsn, payload).to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[HEADER_LEN..].copy_from_slice(payload);
    // Check on write what the reader will check on read.
    debug_assert!(matches!(decode(out), Decoded::Record { lsn: l, .. } if l == lsn));
}

/// Encodes one record into a fresh vector.
pub fn encode(lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; encoded_len(payload.len())];
    encode_into(lsn, payload, &mut out);
    out
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// Fewer than `HEADER_LEN` bytes left and they are not all zero.
    ShortHeader { have: usize },
    /// The header announces more payload than the buffer holds.
    ShortPayload { need: usize, have: usize },
    /// The checksum does not match.
    Checksum,
    /// A header with lsn 0 that is not all zeros.
    ZeroLsn,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::ShortHeader { have } => write!(f, "short header ({have} bytes)"),
            BadRecord::ShortPayload { need, have } => {
                write!(f, "short payload (need {need} bytes, have {have})")
            }
            BadRecord::Checksum => write!(f, "checksum mismatch"),
            BadRecord::ZeroLsn => write!(f, "non-empty header with lsn 0"),
        }
    }
}

/// Result of decoding the record at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record; `encoded_len` bytes were consumed.
    Record {
        lsn: u64,
        payload: &'a [u8],
        encoded_len: usize,
    },
    /// End of written data: an all-zero header, or zero bytes / a zero-filled
    /// stub shorter than a header at the end of the buffer.
    End,
    Bad(BadRecord),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return if buf.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(BadRecord::ShortHeader { have: buf.len() })
        };
    }
    let header = &buf[..HEADER_LEN];
    if header.iter().all(|b| *b == 0) {
        return Decoded::End;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let lsn = read_u64(&header[8..16]);
    if lsn == 0 {
        return Decoded::Bad(BadRecord::ZeroLsn);
    }
    let have = buf.len() - HEADER_LEN;
    if len > have {
        return Decoded::Bad(BadRecord::ShortPayload { need: len, have });
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    if checksum(lsn, payload) != crc {
        return Decoded::Bad(BadRecord::Checksum);
    }
    Decoded::Record {
        lsn,
        payload,
        encoded_len: HEADER_LEN + len,
    }
}

/// Cheap test used when deciding between "torn tail" and "corruption": is
/// there a complete valid record starting exactly at `buf[0]` whose lsn lies
/// in `lsn_range`? The lsn is checked before the checksum so that scanning
/// garbage byte by byte stays linear.
pub(crate) fn valid_record_at(buf: &[u8], lsn_range: std::ops::RangeInclusive<u64>) -> bool {
    if buf.len() < HEADER_LEN {
        return false;
    }
    let lsn = read_u64(&buf[8..16]);
    if !lsn_range.contains(&lsn) {
        return false;
    }
    matches!(decode(buf), Decoded::Record { .. })
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_simple() {
        let rec = encode(7, b"hello");
        assert_eq!(rec.len(), encoded_len(5));
        assert_eq!(
            decode(&rec),
            Decoded::Record {
                lsn: 7,
                payload: b"hello",
                encoded_len: 21
            }
        );
    }

    #[test]
    fn empty_payload_is_a_record_not_end() {
        let rec = encode(1, b"");
        assert!(matches!(decode(&rec), Decoded::Record { lsn: 1, .. }));
    }

    #[test]
    fn zeros_are_end() {
        assert_eq!(decode(&[]), Decoded::End);
        assert_eq!(decode(&[0u8; 5]), Decoded::End);
        assert_eq!(decode(&[0u8; 4096]), Decoded::End);
    }

    #[test]
    fn garbage_is_bad() {
        assert!(matches!(decode(&[0xffu8; 64]), Decoded::Bad(_)));
        assert!(matches!(decode(&[1u8; 3]), Decoded::Bad(_)));
    }

    proptest! {
        #[test]
        fn prop_round_trip(lsn in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..512), trailing in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut buf = encode(lsn, &payload);
            let n = buf.len();
            buf.extend_from_slice(&trailing);
            match decode(&buf) {
                Decoded::Record { lsn: l, payload: p, encoded_len } => {
                    prop_assert_eq!(l, lsn);
                    prop_assert_eq!(p, &payload[..]);
                    prop_assert_eq!(encoded_len, n);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn prop_single_bit_flip_detected(lsn in 1u64.., payload in proptest::collection::vec(any::<u8>(), 0..256), bit in any::<proptest::sample::Index>()) {
            let mut buf = encode(lsn, &payload);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            let decoded = decode(&buf);
            prop_assert!(matches!(decoded, Decoded::Bad(_)), "flip of bit {} not detected: {:?}", bit, decoded);
        }

        #[test]
        fn prop_truncation_detected(lsn in 1u64.., payload in proptest::collection::vec(any::<u8>(), 1..256), cut in any::<proptest::sample::Index>()) {
            let buf = encode(lsn, &payload);
            // Any proper, non-empty prefix.
            let keep = 1 + cut.index(buf.len() - 1);
            let decoded = decode(&buf[..keep]);
            prop_assert!(matches!(decoded, Decoded::Bad(_)), "prefix of {} bytes not detected: {:?}", keep, decoded);
        }

        #[test]
        fn prop_truncation_then_zero_padding_detected(lsn in 1u64.., payload in proptest::collection::vec(any::<u8>(), 1..300), cut in any::<proptest::sample::Index>(), pad in 0usize..600) {
            // What a torn DMA write looks like: a prefix of the record followed by zeros.
            let orig = encode(lsn, &payload);
            let keep = 1 + cut.index(orig.len() - 1);
            let mut buf = orig[..keep].to_vec();
            buf.extend(std::iter::repeat_n(0u8, orig.len() - keep + pad));
            match decode(&buf) {
                Decoded::Bad(_) => {}
                // Only possible when the lost bytes were zeros anyway.
                Decoded::Record { .. } => prop_assert!(orig[keep..].iter().all(|b| *b == 0)),
                // Only possible when what survived of the header is zeros.
                Decoded::End => prop_assert!(orig[..keep].iter().all(|b| *b == 0)),
            }
        }
    }
}

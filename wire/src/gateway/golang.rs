//! The few pieces of Go's standard library whose exact behaviour etcd's
//! gateway shows to clients: how `encoding/json` unquotes and writes
//! strings, how `encoding/base64` (StdEncoding) reads bytes and where it
//! reports an error, and how `strconv.Quote` prints a value in an error.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Go's `strconv.IsPrint`, for the runes this code meets: Latin-1 exactly
/// (U+00A1..U+00FF but U+00AD), beyond it Rust's notion of a control or
/// space character stands in for Go's tables.
fn is_print(c: char) -> bool {
    match c as u32 {
        0x20..=0x7e => true,
        0..=0x1f | 0x7f..=0xa0 | 0xad => false,
        0xa1..=0xff => true,
        _ => !c.is_control() && !c.is_whitespace() && !matches!(c, '\u{2028}' | '\u{2029}'),
    }
}

fn push_escaped_rune(out: &mut String, c: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// The next rune of `s` as Go's `utf8.DecodeRune` reads it: an invalid
/// byte is `None` and one byte long.
fn decode_rune(s: &[u8]) -> (Option<char>, usize) {
    let len = match s.first() {
        Some(b) if *b < 0x80 => 1,
        Some(b) if *b >= 0xf0 => 4,
        Some(b) if *b >= 0xe0 => 3,
        Some(b) if *b >= 0xc0 => 2,
        _ => return (None, 1),
    };
    match s.get(..len).map(std::str::from_utf8) {
        Some(Ok(text)) => (text.chars().next(), len),
        _ => (None, 1),
    }
}

/// Go's `strconv.Quote(string(b))`, as `%q` prints bytes.
pub fn quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < b.len() {
        let (c, n) = decode_rune(&b[i..]);
        match c {
            None => out.push_str(&format!("\\x{:02x}", b[i])),
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some(c) if is_print(c) => out.push(c),
            Some(c) => push_escaped_rune(&mut out, c),
        }
        i += n;
    }
    out.push('"');
    out
}

/// Go's `quoteChar`, how the JSON scanner names a byte in an error: the
/// byte as the rune of the same number.
pub fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        _ => {
            let r = char::from(c);
            let mut out = String::from("'");
            if r == '\\' {
                out.push_str("\\\\");
            } else if is_print(r) {
                out.push(r);
            } else {
                push_escaped_rune(&mut out, r);
            }
            out.push('\'');
            out
        }
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(s.get(..4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Go's `encoding/json` unquoting of a string literal's inside (already
/// checked by the scanner): escapes resolved, surrogate pairs joined, and
/// every invalid UTF-8 byte or lone surrogate replaced by U+FFFD.
pub fn unquote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() {
            let e = s[i + 1];
            i += 2;
            let simple = match e {
                b'b' => Some('\u{8}'),
                b'f' => Some('\u{c}'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'u' => None,
                other => Some(char::from(other)),
            };
            if let Some(c) = simple {
                out.push(c);
                continue;
            }
            let Some(r) = hex4(&s[i..]) else {
                out.push('\u{fffd}');
                continue;
            };
            i += 4;
            if (0xd800..0xdc00).contains(&r) && s.get(i..i + 2) == Some(b"\\u") {
                if let Some(r2) = hex4(&s[i + 2..]).filter(|r2| (0xdc00..0xe000).contains(r2)) {
                    let c = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
                    out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                    i += 6;
                    continue;
                }
            }
            out.push(char::from_u32(r).unwrap_or('\u{fffd}'));
            continue;
        }
        let (c, n) = decode_rune(&s[i..]);
        out.push(c.unwrap_or('\u{fffd}'));
        i += n;
    }
    out
}

/// A string as Go's `json.Marshal` writes it (HTML-safe escaping, invalid
/// UTF-8 as `\ufffd`, U+2028/U+2029 escaped), quotes included.
pub fn push_json_string(out: &mut String, s: &[u8]) {
    out.push('"');
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            match b {
                b'\\' | b'"' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                b'<' | b'>' | b'&' | 0..=0x1f => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                _ => out.push(char::from(b)),
            }
            i += 1;
            continue;
        }
        let (c, n) = decode_rune(&s[i..]);
        match c {
            None => out.push_str("\\ufffd"),
            Some('\u{2028}') => out.push_str("\\u2028"),
            Some('\u{2029}') => out.push_str("\\u2029"),
            Some(c) => out.push(c),
        }
        i += n;
    }
    out.push('"');
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// base64 StdEncoding, padded, as Go's `json.Marshal` writes `[]byte`.
pub fn push_base64(out: &mut String, data: &[u8]) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

fn base64_value(c: u8) -> Option<u32> {
    BASE64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// grpc-gateway's `decodeBinHeader`: `StdEncoding` when the length is a
/// multiple of 4, else `RawStdEncoding` (no padding, `=` illegal).
pub fn base64_decode_bin(src: &[u8]) -> Result<Vec<u8>, String> {
    if src.len().is_multiple_of(4) {
        return base64_decode(src);
    }
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 2);
    let (mut acc, mut n, mut last) = (0u32, 0, 0);
    for (i, &c) in src.iter().enumerate() {
        if c == b'\n' || c == b'\r' {
            continue;
        }
        let v = base64_value(c).ok_or_else(|| format!("illegal base64 data at input byte {i}"))?;
        acc = acc << 6 | v;
        n += 1;
        last = i;
        if n == 4 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            (acc, n) = (0, 0);
        }
    }
    match n {
        1 => return Err(format!("illegal base64 data at input byte {last}")),
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes()),
        _ => {}
    }
    Ok(out)
}

/// Go's `base64.StdEncoding.DecodeString`: padding required, `\r` and `\n`
/// skipped, and an error names the offset Go names
/// (`illegal base64 data at input byte N`).
pub fn base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        // One quantum (Go's decodeQuantum).
        let mut dbuf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0;
        let mut trailing = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = base64_value(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                trailing = Some(corrupt(si));
            }
            dlen = j;
            break;
        }
        let val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3];
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(e) = trailing {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_reads_and_fails_as_go() {
        assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode(b"Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode(b"Zm9vYmE=").unwrap(), b"fooba");
        assert_eq!(base64_decode(b"Zm9v\n").unwrap(), b"foo");
        assert_eq!(base64_decode(b"").unwrap(), b"");
        let e = |s: &[u8]| base64_decode(s).unwrap_err();
        assert_eq!(e(b"Zm9"), "illegal base64 data at input byte 0");
        assert_eq!(e(b"Zm9vY"), "illegal base64 data at input byte 4");
        assert_eq!(e(b"Zm*v"), "illegal base64 data at input byte 2");
        assert_eq!(e(b"Zg="), "illegal base64 data at input byte 3");
        assert_eq!(e(b"Zg==Zg=="), "illegal base64 data at input byte 4");
        assert_eq!(e(b"=Zg="), "illegal base64 data at input byte 0");
        assert_eq!(e("ÿ".as_bytes()), "illegal base64 data at input byte 0");
        for data in [&b""[..], b"a", b"ab", b"abc", b"\x00\xff\xfe\x80"] {
            let mut s = String::new();
            push_base64(&mut s, data);
            assert_eq!(base64_decode(s.as_bytes()).unwrap(), data);
        }
    }

    #[test]
    fn strings_are_written_as_go_writes_them() {
        let mut s = String::new();
        push_json_string(&mut s, "a<b>&\"\\\n\u{1}é\u{2028}".as_bytes());
        assert_eq!(s, "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001é\\u2028\"");
        let mut s = String::new();
        push_json_string(&mut s, b"\xff\x7f");
        assert_eq!(s, "\"\\ufffd\x7f\"");
    }

    #[test]
    fn unquote_replaces_what_go_replaces() {
        assert_eq!(unquote(b"a\\u00e9\\n\\/"), "aé\n/");
        assert_eq!(unquote(b"\\ud83d\\ude00"), "😀");
        assert_eq!(unquote(b"\\ud83dx"), "\u{fffd}x");
        assert_eq!(unquote(b"\xe2\x82A"), "\u{fffd}\u{fffd}A");
    }

    #[test]
    fn bin_headers_decode_as_grpc_gateway() {
        assert_eq!(base64_decode_bin(b"YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode_bin(b"YWI").unwrap(), b"ab");
        assert_eq!(base64_decode_bin(b"YQ").unwrap(), b"a");
        assert_eq!(
            base64_decode_bin(b"YWJjZ").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            base64_decode_bin(b"YQ=").unwrap_err(),
            "illegal base64 data at input byte 2"
        );
        assert_eq!(
            base64_decode_bin(b"abc$").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
    }

    #[test]
    fn quotes_are_gos() {
        assert_eq!(quote(b"FOO"), "\"FOO\"");
        assert_eq!(quote(b"a\"\\\x01\xff"), "\"a\\\"\\\\\\x01\\xff\"");
        assert_eq!(quote_char(b'x'), "'x'");
        assert_eq!(quote_char(b'\n'), "'\\n'");
        assert_eq!(quote_char(0xff), "'ÿ'");
        assert_eq!(quote_char(0x80), "'\\u0080'");
        assert_eq!(quote_char(b'\''), "'\\''");
    }
}

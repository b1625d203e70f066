//! Go's text encodings that etcdctl's output is made of: `%q` quoting,
//! `encoding/json` strings, `%x`-style hex with `\x` prefixes, humanize's
//! byte sizes and `time.Duration` strings. ferroctl prints byte-for-byte what
//! etcdctl prints, so these follow Go's rules, not Rust's `{:?}`.

use base64::Engine as _;

/// Go's `strconv.Quote` of a byte string taken as `string(bytes)`: invalid
/// UTF-8 bytes become `\xNN`, non-printable runes `\u`/`\U` escapes.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if is_go_printable(c) => out.push(c),
                c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: letters, marks, numbers,
/// punctuation, symbols and the ASCII space. Rust has no general-category
/// table in std, so separators, controls, format characters and private
/// use are excluded by range; unassigned code points count as printable
/// (documented in docs/ctl.md).
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff
            | 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xd800..=0xdfff
            | 0xf0000..=0x10ffff | 0xe0001 | 0xe0020..=0xe007f))
}

/// `string(bytes)` as Go's `fmt.Println` writes it: the raw bytes.
pub fn raw(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// etcdctl's `--hex`: every byte as `\xNN`.
pub fn hex_prefixed(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for b in bytes {
        out.push_str(&format!("\\x{b:02x}"));
    }
    out
}

/// Standard base64 with padding, as `encoding/json` writes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A JSON string literal as Go's `encoding/json` writes it (HTML-safe:
/// `<`, `>`, `&`, U+2028 and U+2029 escaped; invalid UTF-8 as U+FFFD).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub fn human_bytes(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if size < 10 {
        return format!("{size} B");
    }
    let exp = ((size as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let val = ((size as f64) / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{} {}", format_fixed(val, 1), UNITS[exp])
    } else {
        format!("{} {}", format_fixed(val, 0), UNITS[exp])
    }
}

/// `%.Nf` with Go's rounding (round half to even on the exact binary
/// value; the values here are short decimals, so ties are exact).
fn format_fixed(val: f64, decimals: u32) -> String {
    let scale = 10f64.powi(decimals as i32);
    let scaled = val * scale;
    let floor = scaled.floor();
    let diff = scaled - floor;
    let rounded = if (diff - 0.5).abs() < 1e-9 {
        if floor % 2.0 == 0.0 {
            floor
        } else {
            floor + 1.0
        }
    } else {
        scaled.round()
    };
    format!("{:.*}", decimals as usize, rounded / scale)
}

/// Go's `time.Duration.String()`, e.g. `1.639355ms`, `2s`, `1m30s`.
pub fn duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_s = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let secs = trim_fraction(u128::from(s as u64) * 1_000_000_000 + frac, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a Go `time.ParseDuration` string (`5s`, `1m30s`, `500ms`, `2h`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("time: invalid duration {}", quote(text.as_bytes()));
    let mut rest = text;
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(invalid());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ns = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    quote(text.as_bytes())
                ))
            }
            unit => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit.as_bytes()),
                    quote(text.as_bytes())
                ))
            }
        };
        rest = &rest[unit_len..];
        total_ns += number * unit_ns;
    }
    Ok(std::time::Duration::from_nanos(total_ns as u64))
}

/// The current time as zap's ISO8601 encoder writes it in etcdctl's log
/// lines: `2026-11-24T15:33:31.058Z`.
pub fn zap_timestamp(now: std::time::SystemTime) -> String {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// capnslog's timestamp (`2006-01-02 15:04:05.000000`, UTC here), as
/// etcd's pkg/flags warnings start.
pub fn capnslog_timestamp(now: std::time::SystemTime) -> String {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An I/O error as Go's `os` package words it: `open PATH: no such file or
/// directory` (lower-case strerror, no Rust "(os error N)" suffix).
pub fn io_error(op: &str, path: &str, err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    let lowered = match chars.next() {
        Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    };
    format!("{op} {path}: {lowered}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote(b"bar"), "\"bar\"");
        assert_eq!(
            quote(b"\x01\xff\xe2\x80\xa8<&\"\t"),
            r#""\x01\xff\u2028<&\"\t""#
        );
        assert_eq!(quote("héllo".as_bytes()), "\"héllo\"");
        assert_eq!(quote(b"\x7f"), r#""\x7f""#);
    }

    #[test]
    fn json_string_is_html_safe() {
        assert_eq!(
            json_string("a<b>&\"\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\n\u0001""#
        );
    }

    #[test]
    fn human_bytes_like_go_humanize() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(25000), "25 kB");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(1_000_000), "1.0 MB");
        assert_eq!(human_bytes(999), "999 B");
    }

    #[test]
    fn durations_round_trip_go_syntax() {
        assert_eq!(parse_duration("5s").unwrap().as_secs(), 5);
        assert_eq!(parse_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert_eq!(
            parse_duration("abc").unwrap_err(),
            "time: invalid duration \"abc\""
        );
        assert!(parse_duration("5").is_err());
        assert_eq!(
            duration(std::time::Duration::from_nanos(1_639_355)),
            "1.639355ms"
        );
        assert_eq!(duration(std::time::Duration::from_secs(2)), "2s");
        assert_eq!(duration(std::time::Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn timestamps_are_utc_iso8601() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_534_411_058);
        assert_eq!(zap_timestamp(t), "2026-11-24T15:33:31.058Z");
    }

    #[test]
    fn hex_prefix_every_byte() {
        assert_eq!(hex_prefixed(b"bin"), r"\x62\x69\x6e");
    }
}

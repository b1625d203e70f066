//! What Go's `net/http` and `net/url` (go1.19, the Go of etcd 3.4.23) do
//! to a request before etcd's handlers see it, where clients see the
//! result: the decoded and cleaned path of `http.ServeMux` and its 301
//! redirects, `url.ParseQuery`'s errors (grpc-gateway's method override
//! parses the body as a form), and grpc-gateway's `Grpc-Timeout` and
//! header names.

use std::time::Duration;

/// `url.unescape(s, encodePath)`: the decoded path Go's handlers match
/// on. None for a malformed escape, which Go's server refuses before any
/// handler (`400 Bad Request`, connection closed).
pub(crate) fn unescape_path(raw: &str) -> Option<Vec<u8>> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|&c| hex(c))?;
            let lo = b.get(i + 2).and_then(|&c| hex(c))?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `http.ServeMux`'s `cleanPath`: `path.Clean` of a rooted path, with a
/// trailing slash kept.
pub(crate) fn clean_path(p: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in p.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(p.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if segments.is_empty() || p.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// `url.URL.EscapedPath` of a path without a raw form
/// (`escape(path, encodePath)`).
pub(crate) fn escape_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &c in p {
        let keep = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// `html.EscapeString` as `http.Redirect` escapes the link in its body.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where `http.ServeMux` sends a request whose path is not clean (or is
/// `/v3`, whose subtree `/v3/` is registered): None when it serves the
/// path itself. `path` is the decoded path, `query` the raw query.
pub(crate) fn redirect_location(path: &[u8], query: Option<&str>) -> Option<String> {
    let clean = clean_path(path);
    // etcd's mux registers no subtree but `/v3/` (and `/`), so only
    // `/v3` gets the slash added.
    let target = if clean == b"/v3" {
        b"/v3/".to_vec()
    } else if clean != path {
        clean
    } else {
        return None;
    };
    let mut location = escape_path(&target);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push('?');
        location.push_str(q);
    }
    Some(location)
}

/// `url.ParseQuery`'s error, found as the bytes arrive (grpc-gateway's
/// method override makes Go parse a JSON body as a form): a pair with a
/// `;` is `invalid semicolon separator in query`, and that error
/// replaces any before it; otherwise the first malformed escape of a
/// key or a value (`invalid URL escape "%zz"`).
#[derive(Default)]
pub(crate) struct FormCheck {
    error: Option<String>,
    /// The pair being read: whether it has a `;`, its first bad escape.
    semicolon: bool,
    bad_escape: Option<Vec<u8>>,
    /// A `%` and what followed it in this component, until two bytes
    /// (or the component's end) decide it.
    escape: Option<Vec<u8>>,
    in_value: bool,
}

impl FormCheck {
    pub(crate) fn push(&mut self, data: &[u8]) {
        for &c in data {
            self.step(c);
        }
    }

    fn step(&mut self, c: u8) {
        if c == b'&' {
            self.end_pair();
            return;
        }
        if c == b';' {
            self.semicolon = true;
        }
        // `=` ends the key (once); later ones are part of the value.
        if c == b'=' && !self.in_value {
            self.end_component();
            self.in_value = true;
            return;
        }
        if let Some(esc) = self.escape.as_mut() {
            esc.push(c);
            if esc.len() == 3 {
                self.end_component();
            }
            return;
        }
        if c == b'%' {
            self.escape = Some(vec![b'%']);
        }
    }

    /// Go names the `%` and the (up to) two bytes after it in the
    /// component when they are not two hex digits.
    fn end_component(&mut self) {
        let Some(esc) = self.escape.take() else {
            return;
        };
        let ok = esc.len() == 3 && esc[1..].iter().all(|&c| hex(c).is_some());
        if !ok && self.bad_escape.is_none() {
            self.bad_escape = Some(esc);
        }
    }

    fn end_pair(&mut self) {
        self.end_component();
        if self.semicolon {
            self.error = Some("invalid semicolon separator in query".into());
        } else if let Some(esc) = self.bad_escape.take() {
            if self.error.is_none() {
                self.error = Some(format!("invalid URL escape {}", super::golang::quote(&esc)));
            }
        }
        self.semicolon = false;
        self.bad_escape = None;
        self.in_value = false;
    }

    /// The error of everything pushed, as the last pair ends.
    pub(crate) fn finish(mut self) -> Option<String> {
        self.end_pair();
        self.error
    }
}

/// `url.ParseQuery`'s error for a whole string.
pub(crate) fn query_error(q: &str) -> Option<String> {
    let mut check = FormCheck::default();
    check.push(q.as_bytes());
    check.finish()
}

/// grpc-gateway's `timeoutDecode` of a `Grpc-Timeout` header: digits
/// (`strconv.ParseInt`, a sign allowed) and a unit (`H M S m u n`), the
/// product wrapping as Go's `time.Duration` multiplication does. Ok(None)
/// for a zero timeout, which sets no deadline; a negative one has
/// already passed.
pub(crate) fn timeout_decode(s: &[u8]) -> Result<Option<GoDuration>, ()> {
    let (&unit, digits) = s.split_last().ok_or(())?;
    if digits.is_empty() {
        return Err(());
    }
    let unit: i64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return Err(()),
    };
    let n: i64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(())?;
    let nanos = unit.wrapping_mul(n);
    Ok((nanos != 0).then_some(GoDuration(nanos)))
}

/// A Go `time.Duration`: nanoseconds, possibly negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GoDuration(pub i64);

impl GoDuration {
    /// How long from now; zero for a duration already passed.
    pub(crate) fn remaining(self) -> Duration {
        Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }
}

/// `textproto.CanonicalMIMEHeaderKey` of a (lower-case, valid) header
/// name: each word's first letter upper case.
pub(crate) fn canonical_header_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_as_gos_mux() {
        let clean = |p: &str| String::from_utf8(clean_path(p.as_bytes())).unwrap();
        assert_eq!(clean("/v3//kv/put"), "/v3/kv/put");
        assert_eq!(clean("/v3/kv/../kv/put"), "/v3/kv/put");
        assert_eq!(clean("/v3/kv/put/."), "/v3/kv/put");
        assert_eq!(clean("/v3/kv/put/"), "/v3/kv/put/");
        assert_eq!(clean("/v3/%C3%A9/./"), "/v3/%C3%A9/");
        assert_eq!(clean("/../.."), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("//"), "/");
        assert_eq!(unescape_path("/v3/kv/%72ange").unwrap(), b"/v3/kv/range");
        assert_eq!(unescape_path("/a%2Fb+").unwrap(), b"/a/b+");
        assert!(unescape_path("/v3/kv/%zz").is_none());
        assert!(unescape_path("/v3/kv/%4").is_none());
        let loc = |p: &str, q| redirect_location(&unescape_path(p).unwrap(), q);
        assert_eq!(
            loc("/v3/kv/..", Some("x=1&y")).as_deref(),
            Some("/v3/?x=1&y")
        );
        assert_eq!(loc("/v3/kv/a%20b/..", None).as_deref(), Some("/v3/kv"));
        assert_eq!(loc("/v3/%C3%A9/./", None).as_deref(), Some("/v3/%C3%A9/"));
        assert_eq!(loc("/v3/a%3Fb//", Some("")).as_deref(), Some("/v3/a%3Fb/"));
        assert_eq!(loc("/v3/kv/put", None), None);
        assert_eq!(loc("/v3", None).as_deref(), Some("/v3/"));
    }

    #[test]
    fn form_errors_are_parse_querys() {
        assert_eq!(query_error(r#"{"key":"Zm9v"}"#), None);
        assert_eq!(
            query_error("a=1&b=%zz&c=%"),
            Some(r#"invalid URL escape "%zz""#.into())
        );
        assert_eq!(
            query_error("a=%4"),
            Some(r#"invalid URL escape "%4""#.into())
        );
        assert_eq!(
            query_error("a%=1"),
            Some(r#"invalid URL escape "%""#.into())
        );
        assert_eq!(
            query_error("a=%41%4"),
            Some(r#"invalid URL escape "%4""#.into())
        );
        assert_eq!(query_error("a=%ff&b"), None);
        assert_eq!(
            query_error("a=%zA&b"),
            Some(r#"invalid URL escape "%zA""#.into())
        );
        assert_eq!(
            query_error("a=%%41"),
            Some(r#"invalid URL escape "%%4""#.into())
        );
        assert_eq!(
            query_error("a=%zz&b;c&d=%"),
            Some("invalid semicolon separator in query".into())
        );
        assert_eq!(
            query_error("a;=%zz"),
            Some("invalid semicolon separator in query".into())
        );
        assert_eq!(
            query_error("a=b=%zz"),
            Some(r#"invalid URL escape "%zz""#.into())
        );
        // Split anywhere, the same answer.
        let body = "x=%41&y=%g1&z;";
        for at in 0..body.len() {
            let mut c = FormCheck::default();
            c.push(&body.as_bytes()[..at]);
            c.push(&body.as_bytes()[at..]);
            assert_eq!(
                c.finish(),
                Some("invalid semicolon separator in query".into())
            );
        }
    }

    #[test]
    fn timeouts_decode_as_grpc_gateways() {
        assert_eq!(timeout_decode(b"10S"), Ok(Some(GoDuration(10_000_000_000))));
        assert_eq!(timeout_decode(b"+2m"), Ok(Some(GoDuration(2_000_000))));
        assert_eq!(timeout_decode(b"-1S"), Ok(Some(GoDuration(-1_000_000_000))));
        assert_eq!(timeout_decode(b"0S"), Ok(None));
        assert!(timeout_decode(b"99999999999H").unwrap().unwrap().0 < 0);
        for bad in [&b""[..], b"S", b"5", b"5X", b"abcS", b"1.5S", b" 1S"] {
            assert_eq!(timeout_decode(bad), Err(()), "{bad:?}");
        }
        assert_eq!(
            canonical_header_key("grpc-metadata-foo-bin"),
            "Grpc-Metadata-Foo-Bin"
        );
    }
}

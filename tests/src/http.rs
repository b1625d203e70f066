//! One plain HTTP/1.1 GET against a server's client port (`/health`,
//! `/version`, `/metrics`), bounded in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound on connecting and on reading the whole reply.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` with `Connection: close`: (status line, body with the chunked
/// coding removed and trailing white space trimmed).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send GET {path} to {addr}: {e}"));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body.trim_end().to_string())
}

/// HTTP/1.1 chunked transfer coding: `size CRLF data CRLF`..., `0 CRLF`.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_and_the_last_chunk_ends_the_body() {
        assert_eq!(dechunk("4\r\nab\r\n\r\n3\r\ncde\r\n0\r\n\r\n"), "ab\r\ncde");
        assert_eq!(dechunk("0\r\n\r\n"), "");
        // A truncated chunk stops the body rather than reading past it.
        assert_eq!(dechunk("2\r\nab\r\n9\r\nxy"), "ab");
    }
}

//! `txn`: etcdctl's text format (compares, an empty line, success
//! requests, an empty line, failure requests, an empty line), its compare
//! syntax `target("key") op "value"`, and its request lines (`put`, `get`,
//! `del` with their flags).

use std::io::BufRead;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    compare, request_op, Compare, RequestOp, TxnRequest, TxnResponse,
};

use crate::client::path;
use crate::ctx::{emit, Ctx};
use crate::error::CmdError;

/// Lines read per section before the input is refused: a transaction
/// larger than this would be refused by the server anyway (`--max-txn-ops`).
const TXN_LINES_MAX: usize = 100_000;

pub async fn txn(ctx: Ctx) -> Result<(), CmdError> {
    if !ctx.inv.args.is_empty() {
        return Err(CmdError::bad_args("txn command does not accept argument"));
    }
    let interactive = ctx.inv.bool("interactive");
    let client = ctx.client().await?;
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let prompt = |s: &str| -> Result<(), CmdError> {
        if interactive {
            emit(format!("{s}\n").as_bytes())?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let compare = read_section(&mut reader, parse_compare)?;
    prompt("success requests (get, put, del):")?;
    let success = read_section(&mut reader, parse_request)?;
    prompt("failure requests (get, put, del):")?;
    let failure = read_section(&mut reader, parse_request)?;
    drop(reader);
    let req = TxnRequest {
        compare,
        success,
        failure,
    };
    let resp: TxnResponse = ctx.call(&client, path::TXN, req).await?;
    emit(&ctx.printer.txn(&resp)?)
}

/// Reads lines up to an empty one; a missing final newline is Go's
/// `ReadString` error, EOF.
fn read_section<T>(
    reader: &mut dyn BufRead,
    parse: fn(&str) -> Result<T, CmdError>,
) -> Result<Vec<T>, CmdError> {
    let mut items = Vec::new();
    for _ in 0..TXN_LINES_MAX {
        let mut raw = Vec::new();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| CmdError::invalid_input(e.to_string()))?;
        if n == 0 || raw.last() != Some(&b'\n') {
            return Err(CmdError::invalid_input("EOF"));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim();
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
    Err(CmdError::invalid_input(format!(
        "more than {TXN_LINES_MAX} lines in one txn section"
    )))
}

/// A Go `%q` token at the start of `s` (double- or back-quoted): the
/// unquoted bytes and the rest.
fn scan_quoted(s: &str) -> Option<(Vec<u8>, &str)> {
    let s = s.trim_start();
    if let Some(body) = s.strip_prefix('`') {
        let end = body.find('`')?;
        return Some((body.as_bytes()[..end].to_vec(), &body[end + 1..]));
    }
    let body = s.strip_prefix('"')?;
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    'a' => out.push(7),
                    'b' => out.push(8),
                    'f' => out.push(12),
                    'v' => out.push(11),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    '\'' => out.push(b'\''),
                    'x' => {
                        let h: String = (0..2)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        out.push(u8::from_str_radix(&h, 16).ok()?);
                    }
                    'u' | 'U' => {
                        let len = if e == 'u' { 4 } else { 8 };
                        let h: String = (0..len)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let ch = char::from_u32(u32::from_str_radix(&h, 16).ok()?)?;
                        out.extend_from_slice(ch.to_string().as_bytes());
                    }
                    '0'..='7' => {
                        let mut oct = e.to_string();
                        for _ in 0..2 {
                            oct.push(chars.next()?.1);
                        }
                        out.push(u8::from_str_radix(&oct, 8).ok()?);
                    }
                    _ => return None,
                }
            }
            '\n' => return None,
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    None
}

/// `target("key") op "value"`, as etcdctl's `parseCompare`.
pub fn parse_compare(line: &str) -> Result<Compare, CmdError> {
    let malformed =
        |detail: String| CmdError::invalid_input(format!("malformed comparison: {line}{detail}"));
    let Some((target, rest)) = line.split_once('(') else {
        return Err(malformed(String::new()));
    };
    // Sscanf("%q) %s %q"): count the items scanned, report what was got.
    let mut key = Vec::new();
    let mut op = String::new();
    let mut val = Vec::new();
    let mut n = 0;
    if let Some((k, after)) = scan_quoted(rest) {
        key = k;
        n = 1;
        if let Some(after) = after.strip_prefix(')') {
            let after = after.trim_start();
            let token: String = after.chars().take_while(|c| !c.is_whitespace()).collect();
            if !token.is_empty() {
                op = token.clone();
                n = 2;
                if let Some((v, _)) = scan_quoted(&after[token.len()..]) {
                    val = v;
                    n = 3;
                }
            }
        }
    }
    if n != 3 {
        return Err(malformed(format!(
            "; got {target}({}) {op} {}",
            crate::gofmt::quote(&key),
            crate::gofmt::quote(&val)
        )));
    }
    let result = match op.as_str() {
        "=" | "==" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        ">" => compare::CompareResult::Greater,
        "<" => compare::CompareResult::Less,
        // etcdctl 3.4 panics ("Unknown result op").
        other => return Err(malformed(format!(" (unknown operator {other})"))),
    };
    let invalid = || CmdError::invalid_input(format!("invalid txn compare request: {line}"));
    let int = || -> Result<i64, CmdError> {
        std::str::from_utf8(&val)
            .ok()
            .and_then(|v| super::kv::parse_decimal(v).ok())
            .ok_or_else(invalid)
    };
    let (target, union) = match target {
        "ver" | "version" => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(int()?),
        ),
        "c" | "create" => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(int()?),
        ),
        "m" | "mod" => (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(int()?),
        ),
        "val" | "value" => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(Bytes::from(val.clone())),
        ),
        // etcdctl 3.4 panics on every lease compare (it passes the value
        // as a string); ferroctl takes the decimal lease id.
        "lease" => (
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(int()?),
        ),
        other => return Err(malformed(format!(" (unknown target {other})"))),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::from(key),
        range_end: Bytes::new(),
        target_union: Some(union),
    })
}

/// etcdctl's `argify`: whitespace-separated words, `"..."` (Go-unquoted)
/// and `'...'` as single words.
pub fn argify(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return args;
        }
        if rest.starts_with('"') {
            if let Some((bytes, after)) = scan_quoted(rest) {
                args.push(String::from_utf8_lossy(&bytes).into_owned());
                rest = after;
                continue;
            }
            rest = &rest[1..];
            continue;
        }
        if let Some(body) = rest.strip_prefix('\'') {
            if let Some(end) = body.find('\'') {
                args.push(body[..end].to_string());
                rest = &body[end + 1..];
                continue;
            }
            rest = body;
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        args.push(rest[..end].to_string());
        rest = &rest[end..];
    }
}

/// One request line: `put`, `get` or `del` with that command's flags.
pub fn parse_request(line: &str) -> Result<RequestOp, CmdError> {
    let args = argify(line);
    if args.len() < 2 {
        return Err(CmdError::invalid_input(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let invalid = || CmdError::invalid_input(format!("invalid txn request: {line}"));
    if !matches!(args[0].as_str(), "put" | "get" | "del") {
        return Err(invalid());
    }
    // Only the command's own flags exist inside a txn line.
    if args.iter().skip(1).any(|a| {
        a.starts_with('-') && a != "--" && {
            let name = a.trim_start_matches('-');
            let name = name.split('=').next().unwrap_or(name);
            crate::cli::GLOBAL_FLAGS
                .iter()
                .any(|g| g.name == name || g.short.map(String::from).as_deref() == Some(name))
        }
    }) {
        return Err(invalid());
    }
    let inv = crate::cli::parse(&args).map_err(|_| invalid())?;
    let request = match args[0].as_str() {
        "put" => request_op::Request::RequestPut(super::kv::put_request(&inv, &mut || None)?),
        "get" => request_op::Request::RequestRange(super::kv::range_request(&inv)?),
        _ => request_op::Request::RequestDeleteRange(super::kv::delete_request(&inv)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_parse_all_targets() {
        let c = parse_compare(r#"mod("foo") > "0""#).unwrap();
        assert_eq!(c.target, compare::CompareTarget::Mod as i32);
        assert_eq!(c.result, compare::CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(0)));
        let c = parse_compare(r#"value("a\x41") != "x y""#).unwrap();
        assert_eq!(&c.key[..], b"aA");
        assert_eq!(
            c.target_union,
            Some(compare::TargetUnion::Value(Bytes::from_static(b"x y")))
        );
        assert!(parse_compare(r#"c("k") = "1" extra"#).is_ok());
    }

    #[test]
    fn malformed_compares_say_what_was_got() {
        let msg = |l: &str| parse_compare(l).unwrap_err().message;
        assert_eq!(
            msg(r#"mod("foo") = 0"#),
            r#"malformed comparison: mod("foo") = 0; got mod("foo") = """#
        );
        assert_eq!(
            msg(r#"mod("foo")"#),
            r#"malformed comparison: mod("foo"); got mod("foo")  """#
        );
        assert_eq!(
            msg(r#"mod(foo) = "1""#),
            r#"malformed comparison: mod(foo) = "1"; got mod("")  """#
        );
        assert_eq!(
            msg(r#"valu("foo2") = "two""#),
            r#"malformed comparison: valu("foo2") = "two" (unknown target valu)"#
        );
        assert_eq!(msg("nothing"), "malformed comparison: nothing");
        assert_eq!(
            msg(r#"mod("foo") = "x""#),
            r#"invalid txn compare request: mod("foo") = "x""#
        );
        assert_eq!(parse_compare(r#"mod("foo") = "x""#).unwrap_err().code, 3);
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            argify(r#"put "a b" 'c d' e"#),
            vec!["put", "a b", "c d", "e"]
        );
        let op = parse_request("get foo --prefix").unwrap();
        match op.request {
            Some(request_op::Request::RequestRange(r)) => assert_eq!(&r.range_end[..], b"fop"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_request("pot a b").unwrap_err().message,
            "invalid txn request: pot a b"
        );
        assert_eq!(
            parse_request("get").unwrap_err().message,
            "invalid txn compare request: get"
        );
        assert_eq!(
            parse_request("get a --bogus").unwrap_err().message,
            "invalid txn request: get a --bogus"
        );
        let e = parse_request("put a").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                128,
                "put command needs 1 argument and input from stdin or 2 arguments"
            )
        );
    }

    #[test]
    fn sections_end_at_empty_lines_and_need_newlines() {
        let mut input: &[u8] = b"mod(\"a\") = \"1\"\n\nput a b\n";
        assert_eq!(read_section(&mut input, parse_compare).unwrap().len(), 1);
        let e = read_section(&mut input, parse_request).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (3, "EOF"));
    }
}

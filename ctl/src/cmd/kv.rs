//! get, put, del, compaction: requests built as clientv3's options build
//! them (prefix and from-key ends, sort defaults), so the server sees what
//! it would see from etcdctl.

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse,
};

use crate::cli::Invocation;
use crate::client::path;
use crate::ctx::{emit, Ctx};
use crate::error::CmdError;
use crate::printer::Format;

/// clientv3's `GetPrefixRangeEnd`: the key after every key with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// clientv3's `WithPrefix`: every key starting with `prefix`; the empty
/// prefix is every key.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_end(prefix))
    }
}

/// `key` to `end` as `--prefix` / `--from-key` turn them (clientv3's
/// `WithPrefix` / `WithFromKey`).
fn flag_range(key: Vec<u8>, end: Vec<u8>, prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    if prefix {
        return prefix_range(&key);
    }
    if from_key {
        let key = if key.is_empty() { vec![0] } else { key };
        return (key, vec![0]);
    }
    (key, end)
}

/// Flags of `get` that shape the request, also used by `txn` lines.
pub fn range_request(inv: &Invocation) -> Result<RangeRequest, CmdError> {
    let args = &inv.args;
    if args.is_empty() {
        return Err(CmdError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    }
    let prefix = inv.bool("prefix");
    let from_key = inv.bool("from-key");
    if prefix && from_key {
        return Err(CmdError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut req = RangeRequest::default();
    match inv.string("consistency").as_str() {
        "s" => req.serializable = true,
        "l" => {}
        other => {
            return Err(CmdError::bad_feature(format!(
                "unknown consistency flag {}",
                crate::gofmt::quote(other.as_bytes())
            )))
        }
    }
    let key = crate::cli::arg_bytes(&args[0]);
    let mut end = Vec::new();
    if args.len() > 1 {
        if prefix || from_key {
            return Err(CmdError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        end = crate::cli::arg_bytes(&args[1]);
    }
    req.limit = inv.int("limit");
    let rev = inv.int("rev");
    if rev > 0 {
        req.revision = rev;
    }
    let order_flag = inv.string("order");
    let order = match order_flag.to_uppercase().as_str() {
        "ASCEND" => 1,
        "DESCEND" => 2,
        "" => 0,
        _ => {
            return Err(CmdError::bad_feature(format!(
                "bad sort order {order_flag}"
            )))
        }
    };
    let target_flag = inv.string("sort-by");
    let target = match target_flag.to_uppercase().as_str() {
        "CREATE" => 2,
        "KEY" | "" => 0,
        "MODIFY" => 3,
        "VALUE" => 4,
        "VERSION" => 1,
        _ => {
            return Err(CmdError::bad_feature(format!(
                "bad sort target {target_flag}"
            )))
        }
    };
    // clientv3.WithSort: ascending by key is the server's natural order.
    req.sort_order = if target == 0 && order == 1 { 0 } else { order };
    req.sort_target = target;
    let (key, end) = flag_range(key, end, prefix, from_key);
    req.keys_only = inv.bool("keys-only");
    req.count_only = inv.is_set("count-only") && inv.bool("count-only");
    req.min_mod_revision = inv.int("min-mod-rev");
    req.max_mod_revision = inv.int("max-mod-rev");
    req.min_create_revision = inv.int("min-create-rev");
    req.max_create_revision = inv.int("max-create-rev");
    req.key = Bytes::from(key);
    req.range_end = Bytes::from(end);
    Ok(req)
}

pub async fn get(mut ctx: Ctx) -> Result<(), CmdError> {
    let req = range_request(&ctx.inv)?;
    let client = ctx.client().await?;
    let resp: RangeResponse = ctx.call(&client, path::RANGE, req).await?;
    if ctx.inv.bool("print-value-only") {
        if ctx.printer.format != Format::Simple {
            return Err(CmdError::bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        ctx.printer.value_only = true;
    }
    if ctx.inv.bool("count-only") {
        return emit(&ctx.printer.count(&resp)?);
    }
    emit(&ctx.printer.get(&resp)?)
}

/// `put`'s arguments and flags as a request (stdin is read for a missing
/// value, as etcdctl does).
pub fn put_request(
    inv: &Invocation,
    stdin: &mut dyn FnMut() -> Option<Vec<u8>>,
) -> Result<PutRequest, CmdError> {
    let args = &inv.args;
    let usage = "put command needs 1 argument and input from stdin or 2 arguments";
    if args.is_empty() {
        return Err(CmdError::bad_args(usage));
    }
    let ignore_value = inv.bool("ignore-value");
    if ignore_value && args.len() > 1 {
        return Err(CmdError::bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut value = Vec::new();
    if !ignore_value {
        value = match args.get(1) {
            Some(v) => crate::cli::arg_bytes(v),
            None => match stdin() {
                Some(bytes) if !bytes.is_empty() => bytes,
                _ => return Err(CmdError::bad_args(usage)),
            },
        };
    }
    let lease = parse_hex_id(&inv.string("lease"))
        .map_err(|e| CmdError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(PutRequest {
        key: Bytes::from(crate::cli::arg_bytes(&args[0])),
        value: Bytes::from(value),
        lease,
        prev_kv: inv.bool("prev-kv"),
        ignore_value,
        ignore_lease: inv.bool("ignore-lease"),
    })
}

/// Go's `strconv.ParseInt(s, 16, 64)`, with its error text.
pub fn parse_hex_id(text: &str) -> Result<i64, String> {
    let quoted = crate::gofmt::quote(text.as_bytes());
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {quoted}: invalid syntax"
        ));
    }
    let magnitude = u64::from_str_radix(digits, 16)
        .map_err(|_| format!("strconv.ParseInt: parsing {quoted}: value out of range"))?;
    let out_of_range = || format!("strconv.ParseInt: parsing {quoted}: value out of range");
    if neg {
        if magnitude > 1 << 63 {
            return Err(out_of_range());
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| out_of_range())
    }
}

pub fn read_stdin_all() -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).ok()?;
    Some(buf)
}

pub async fn put(ctx: Ctx) -> Result<(), CmdError> {
    let req = put_request(&ctx.inv, &mut read_stdin_all)?;
    let client = ctx.client().await?;
    let resp: PutResponse = ctx.call(&client, path::PUT, req).await?;
    emit(&ctx.printer.put(&resp)?)
}

pub fn delete_request(inv: &Invocation) -> Result<DeleteRangeRequest, CmdError> {
    let args = &inv.args;
    if args.is_empty() || args.len() > 2 {
        return Err(CmdError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    let prefix = inv.bool("prefix");
    let from_key = inv.bool("from-key");
    if prefix && from_key {
        return Err(CmdError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let key = crate::cli::arg_bytes(&args[0]);
    let mut end = Vec::new();
    if args.len() > 1 {
        if prefix || from_key {
            return Err(CmdError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        end = crate::cli::arg_bytes(&args[1]);
    }
    let (key, end) = flag_range(key, end, prefix, from_key);
    Ok(DeleteRangeRequest {
        key: Bytes::from(key),
        range_end: Bytes::from(end),
        prev_kv: inv.bool("prev-kv"),
    })
}

pub async fn del(ctx: Ctx) -> Result<(), CmdError> {
    let req = delete_request(&ctx.inv)?;
    let client = ctx.client().await?;
    let resp: DeleteRangeResponse = ctx.call(&client, path::DELETE_RANGE, req).await?;
    emit(&ctx.printer.del(&resp)?)
}

pub async fn compaction(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("compaction command needs 1 argument"));
    }
    let text = &ctx.inv.args[0];
    let revision: i64 = parse_decimal(text).map_err(CmdError::error)?;
    let client = ctx.client().await?;
    let req = CompactionRequest {
        revision,
        physical: ctx.inv.bool("physical"),
    };
    let _: CompactionResponse = ctx.call(&client, path::COMPACT, req).await?;
    emit(format!("compacted revision {revision}\n").as_bytes())
}

/// Go's `strconv.ParseInt(s, 10, 64)`, with its error text.
pub fn parse_decimal(text: &str) -> Result<i64, String> {
    let quoted = crate::gofmt::quote(text.as_bytes());
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {quoted}: invalid syntax"
        ));
    }
    text.parse::<i64>()
        .map_err(|_| format!("strconv.ParseInt: parsing {quoted}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(line: &str) -> Invocation {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        crate::cli::parse(&argv).unwrap()
    }

    #[test]
    fn prefix_and_from_key_ends_follow_clientv3() {
        let r = range_request(&inv("get foo --prefix")).unwrap();
        assert_eq!(&r.key[..], b"foo");
        assert_eq!(&r.range_end[..], b"fop");
        let r = range_request(&inv("get a --from-key")).unwrap();
        assert_eq!(&r.range_end[..], b"\0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn sort_ascend_by_key_is_dropped() {
        let r = range_request(&inv("get a --order ASCEND")).unwrap();
        assert_eq!((r.sort_order, r.sort_target), (0, 0));
        let r = range_request(&inv("get a --sort-by=modify --order=descend")).unwrap();
        assert_eq!((r.sort_order, r.sort_target), (2, 3));
        let e = range_request(&inv("get a --sort-by=FOO")).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (4, "bad sort target FOO"));
    }

    #[test]
    fn lease_ids_parse_as_go_hex() {
        assert_eq!(parse_hex_id("abcdef"), Ok(0xabcdef));
        assert_eq!(
            parse_hex_id("zz").unwrap_err(),
            "strconv.ParseInt: parsing \"zz\": invalid syntax"
        );
        let e = put_request(&inv("put --lease=zz a b"), &mut || None).unwrap_err();
        assert_eq!(
            e.message,
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }

    #[test]
    fn put_value_from_stdin() {
        let r = put_request(&inv("put k"), &mut || Some(b"v\n".to_vec())).unwrap();
        assert_eq!(&r.value[..], b"v\n");
        let e = put_request(&inv("put k"), &mut || Some(Vec::new())).unwrap_err();
        assert_eq!(e.code, 128);
    }
}

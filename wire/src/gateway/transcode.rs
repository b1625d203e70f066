//! JSON to protobuf and back by the protos' descriptors, as etcd's gateway
//! does it with golang/protobuf 1.3's `jsonpb` (`OrigName: true`, defaults
//! left out, enums by name, 64-bit integers as strings, bytes as base64)
//! over gogo-generated messages:
//!
//! - requests: a field is looked up by its proto name or its
//!   lowerCamelCase name (the latter wins if both are given), unknown
//!   fields are ignored, `null` leaves a field unset, a 64-bit or 32-bit
//!   integer may be given as a string, and each error is the one Go's
//!   `encoding/json` or `jsonpb` gives, for the first bad field in
//!   declaration order (oneof members after the others);
//! - responses: fields in declaration order, zero scalars and empty
//!   strings, bytes and lists left out, but a oneof member or a message
//!   that is present always written.
//!
//! The JSON handed in has passed [`super::scan`], so walking it here needs
//! no error handling of its own syntax.

use std::collections::HashMap;

use super::golang::{base64_decode, push_base64, push_json_string, quote, unquote};
use super::scan::check_valid;
use super::schema::{Field, Kind, Schema};

/// prost's recursion limit, which the gRPC path decodes requests with: a
/// deeper request could not be served either way, and this bounds the
/// recursion of both directions here.
pub const NESTING_DEPTH_MAX: usize = 100;

/// A request that cannot become a protobuf message.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// In Go's words (etcd answers them as InvalidArgument).
    Json(String),
    /// Nested deeper than [`NESTING_DEPTH_MAX`].
    TooDeep,
}

type Result<T> = std::result::Result<T, DecodeError>;

/// One JSON value, already checked, split at its top level.
enum Json<'a> {
    Null,
    Bool(bool),
    Number(&'a [u8]),
    /// What is between the quotes, as written.
    String(&'a [u8]),
    Array(&'a [u8]),
    Object(&'a [u8]),
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|&c| !is_space(c)).unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|&c| !is_space(c))
        .map_or(start, |e| e + 1);
    &raw[start..end.max(start)]
}

fn classify(raw: &[u8]) -> Json<'_> {
    let raw = trim(raw);
    match raw.first() {
        Some(b'{') => Json::Object(raw),
        Some(b'[') => Json::Array(raw),
        Some(b'"') => Json::String(raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default()),
        Some(b't') => Json::Bool(true),
        Some(b'f') => Json::Bool(false),
        Some(b'n') | None => Json::Null,
        Some(_) => Json::Number(raw),
    }
}

/// Where the value starting at `i` ends (valid JSON).
fn skip_value(s: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    while i < s.len() {
        let c = s[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => {
                    in_string = false;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                // A literal at the top ends before its container closes.
                b'}' | b']' if depth == 0 => return i,
                b'}' | b']' => {
                    if depth == 1 {
                        return i + 1;
                    }
                    depth -= 1;
                }
                b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
    }
    s.len()
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// The elements of an array, or the values of an object with their keys
/// (unquoted as Go does), in order.
fn items(container: &[u8]) -> Vec<(Option<String>, &[u8])> {
    let is_object = container.first() == Some(&b'{');
    let mut out = Vec::new();
    let mut i = skip_space(container, 1);
    while i < container.len() && !matches!(container[i], b'}' | b']') {
        let mut key = None;
        if is_object {
            let end = skip_value(container, i);
            key = Some(unquote(
                container
                    .get(i + 1..end.saturating_sub(1))
                    .unwrap_or_default(),
            ));
            i = skip_space(container, end) + 1; // past ':'
            i = skip_space(container, i);
        }
        let end = skip_value(container, i);
        out.push((key, &container[i..end]));
        i = skip_space(container, end);
        if container.get(i) == Some(&b',') {
            i = skip_space(container, i + 1);
        }
    }
    out
}

fn kind_word(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn type_error(what: &str, go_type: &str) -> DecodeError {
    DecodeError::Json(format!(
        "json: cannot unmarshal {what} into Go value of type {go_type}"
    ))
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    push_varint(out, u64::from(number) << 3 | u64::from(wire_type));
}

fn push_len_delimited(out: &mut Vec<u8>, number: u32, data: &[u8]) {
    push_tag(out, number, 2);
    push_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// `raw` (one JSON value) as the protobuf encoding of message `name`.
pub fn from_json(schema: &Schema, name: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_message(schema, name, raw, 0, &mut out)?;
    Ok(out)
}

fn encode_message(
    schema: &Schema,
    name: &str,
    raw: &[u8],
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    if depth > NESTING_DEPTH_MAX {
        return Err(DecodeError::TooDeep);
    }
    let Some(msg) = schema.messages.get(name) else {
        return Ok(());
    };
    let body = match classify(raw) {
        Json::Null => return Ok(()),
        Json::Object(body) => body,
        other => return Err(type_error(kind_word(&other), "map[string]json.RawMessage")),
    };
    // Go reads the object into a map: a key given twice counts once, the
    // last time.
    let mut members: HashMap<String, &[u8]> = HashMap::new();
    for (key, value) in items(body) {
        members.insert(key.unwrap_or_default(), value);
    }
    let regular = msg.fields.iter().filter(|f| !f.in_oneof());
    let oneof = msg.fields.iter().filter(|f| f.in_oneof());
    for f in regular.chain(oneof) {
        let orig = members.remove(&f.name);
        let camel = members.remove(&f.json_name);
        if let Some(value) = camel.or(orig) {
            encode_field(schema, f, value, depth, out)?;
        }
    }
    Ok(())
}

fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

fn encode_field(
    schema: &Schema,
    f: &Field,
    raw: &[u8],
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    if !f.repeated {
        return encode_single(schema, f, raw, depth, out);
    }
    let elements = match classify(raw) {
        Json::Null => return Ok(()),
        Json::Array(a) => items(a),
        other => return Err(type_error(kind_word(&other), "[]json.RawMessage")),
    };
    if packable(&f.kind) {
        // proto3 packs repeated scalars, as gogo's encoder does.
        let mut packed = Vec::new();
        for (_, e) in elements {
            if let Some(v) = scalar(schema, f, e)? {
                push_varint(&mut packed, v);
            } else {
                push_varint(&mut packed, 0);
            }
        }
        if !packed.is_empty() {
            push_len_delimited(out, f.number, &packed);
        }
        return Ok(());
    }
    for (_, e) in elements {
        match &f.kind {
            Kind::Message(m) => {
                let mut nested = Vec::new();
                encode_message(schema, m, e, depth + 1, &mut nested)?;
                push_len_delimited(out, f.number, &nested);
            }
            _ => {
                let data = string_or_bytes(f, e)?.unwrap_or_default();
                push_len_delimited(out, f.number, &data);
            }
        }
    }
    Ok(())
}

fn encode_single(
    schema: &Schema,
    f: &Field,
    raw: &[u8],
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    match &f.kind {
        Kind::Message(m) => {
            if matches!(classify(raw), Json::Null) {
                return Ok(());
            }
            let mut nested = Vec::new();
            encode_message(schema, m, raw, depth + 1, &mut nested)?;
            push_len_delimited(out, f.number, &nested);
        }
        Kind::String | Kind::Bytes => {
            // A oneof member is written when set, even empty; another
            // field only when not empty (gogo's proto3 encoder).
            if let Some(data) = string_or_bytes(f, raw)? {
                if f.in_oneof() || !data.is_empty() {
                    push_len_delimited(out, f.number, &data);
                }
            }
        }
        _ => {
            // A oneof member given `null` is still set (to zero), as jsonpb
            // sets it; another field is written only when not zero.
            let v = scalar(schema, f, raw)?;
            if f.in_oneof() || v.is_some_and(|v| v != 0) {
                push_tag(out, f.number, 0);
                push_varint(out, v.unwrap_or(0));
            }
        }
    }
    Ok(())
}

/// A string or bytes field's value; None for `null`.
fn string_or_bytes(f: &Field, raw: &[u8]) -> Result<Option<Vec<u8>>> {
    let v = classify(raw);
    match (&f.kind, &v) {
        (_, Json::Null) => Ok(None),
        (Kind::String, Json::String(s)) => Ok(Some(unquote(s).into_bytes())),
        (Kind::String, _) => Err(type_error(kind_word(&v), "string")),
        (_, Json::String(s)) => base64_decode(unquote(s).as_bytes())
            .map(Some)
            .map_err(DecodeError::Json),
        // Go's encoding/json also takes bytes as an array of numbers.
        (_, Json::Array(a)) => {
            let mut data = Vec::new();
            for (_, e) in items(a) {
                let e = classify(e);
                match e {
                    Json::Null => data.push(0),
                    Json::Number(n) => match std::str::from_utf8(n)
                        .ok()
                        .and_then(|n| n.parse::<u8>().ok())
                    {
                        Some(b) => data.push(b),
                        None => {
                            let what = format!("number {}", String::from_utf8_lossy(n));
                            return Err(type_error(&what, "uint8"));
                        }
                    },
                    other => return Err(type_error(kind_word(&other), "uint8")),
                }
            }
            Ok(Some(data))
        }
        _ => Err(type_error(kind_word(&v), "[]uint8")),
    }
}

fn go_type(schema: &Schema, kind: &Kind) -> String {
    match kind {
        Kind::Int64 => "int64".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Int32 => "int32".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "[]uint8".into(),
        Kind::Enum(e) => schema
            .enums
            .get(e)
            .map_or_else(|| e.clone(), |e| e.go_name.clone()),
        Kind::Message(_) => "map[string]json.RawMessage".into(),
    }
}

/// A varint field's value as its wire varint; None for `null`.
fn scalar(schema: &Schema, f: &Field, raw: &[u8]) -> Result<Option<u64>> {
    let go = go_type(schema, &f.kind);
    let mut v = classify(raw);
    match (&f.kind, &v) {
        (_, Json::Null) => return Ok(None),
        (Kind::Bool, Json::Bool(b)) => return Ok(Some(u64::from(*b))),
        (Kind::Bool, _) => return Err(type_error(kind_word(&v), &go)),
        (Kind::Enum(e), Json::String(s)) => {
            // jsonpb matches the name as written, escapes and all.
            let values = schema
                .enums
                .get(e)
                .map(|e| &e.values[..])
                .unwrap_or_default();
            return match values.iter().find(|(name, _)| name.as_bytes() == *s) {
                Some((_, n)) => Ok(Some(*n as i64 as u64)),
                None => Err(DecodeError::Json(format!(
                    "unknown value {} for enum {go}",
                    quote(s)
                ))),
            };
        }
        (Kind::Int64 | Kind::Uint64 | Kind::Int32 | Kind::Uint32, Json::String(s)) => {
            // jsonpb drops the quotes (without unescaping) and reads what
            // is left as JSON.
            check_valid(s).map_err(DecodeError::Json)?;
            v = classify(s);
        }
        _ => {}
    }
    let Json::Number(n) = v else {
        if matches!(v, Json::Null) {
            return Ok(None);
        }
        return Err(type_error(kind_word(&v), &go));
    };
    let text = std::str::from_utf8(n).unwrap_or_default();
    let parsed = match f.kind {
        Kind::Uint64 => text.parse::<u64>().ok(),
        Kind::Uint32 => text.parse::<u32>().ok().map(u64::from),
        Kind::Int32 | Kind::Enum(_) => text.parse::<i32>().ok().map(|v| v as i64 as u64),
        _ => text.parse::<i64>().ok().map(|v| v as u64),
    };
    match parsed {
        Some(v) => Ok(Some(v)),
        None => Err(type_error(&format!("number {text}"), &go)),
    }
}

/// A protobuf message from the server, malformed (a bug on our side).
#[derive(Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

/// The protobuf encoding of message `name` as etcd's gateway writes it.
pub fn to_json(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
) -> std::result::Result<String, EncodeError> {
    let mut out = String::new();
    write_message(schema, name, bytes, 0, &mut out)?;
    Ok(out)
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn read_fields(b: &[u8]) -> Option<Vec<(u32, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let tag = read_varint(b, &mut i)?;
        let number = u32::try_from(tag >> 3).ok()?;
        let value = match tag & 7 {
            0 => Wire::Varint(read_varint(b, &mut i)?),
            1 => {
                let v = u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?);
                i += 8;
                Wire::Fixed64(v)
            }
            2 => {
                let len = usize::try_from(read_varint(b, &mut i)?).ok()?;
                let data = b.get(i..i.checked_add(len)?)?;
                i += len;
                Wire::Bytes(data)
            }
            5 => {
                let v = u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?);
                i += 4;
                Wire::Fixed32(v)
            }
            _ => return None,
        };
        out.push((number, value));
    }
    Some(out)
}

fn write_message(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), EncodeError> {
    let bad = || EncodeError(format!("malformed {name} from the server"));
    if depth > NESTING_DEPTH_MAX {
        return Err(EncodeError(format!("{name} nested too deep")));
    }
    let msg = schema.messages.get(name).ok_or_else(bad)?;
    let wire = read_fields(bytes).ok_or_else(bad)?;
    out.push('{');
    let mut first = true;
    for f in &msg.fields {
        let values: Vec<&Wire> = wire
            .iter()
            .filter(|(n, _)| *n == f.number)
            .map(|(_, w)| w)
            .collect();
        if values.is_empty() {
            continue;
        }
        if let Some(group) = f.oneof {
            // Of a oneof's members on the wire the last one is set.
            let last = wire.iter().rev().find_map(|(n, _)| {
                msg.fields
                    .iter()
                    .find(|g| g.number == *n && g.oneof == Some(group))
            });
            if last.is_some_and(|g| g.number != f.number) {
                continue;
            }
        }
        let mut rendered = String::new();
        if f.repeated {
            rendered.push('[');
            let mut n = 0;
            for w in &values {
                match (w, packable(&f.kind)) {
                    (Wire::Bytes(packed), true) => {
                        let mut i = 0;
                        while i < packed.len() {
                            let v = read_varint(packed, &mut i).ok_or_else(bad)?;
                            if n > 0 {
                                rendered.push(',');
                            }
                            write_scalar(schema, &f.kind, v, &mut rendered);
                            n += 1;
                        }
                    }
                    _ => {
                        if n > 0 {
                            rendered.push(',');
                        }
                        write_value(schema, f, w, depth, &mut rendered)?;
                        n += 1;
                    }
                }
            }
            rendered.push(']');
            if n == 0 {
                continue;
            }
        } else if let Kind::Message(m) = &f.kind {
            // Occurrences of a message field merge: their concatenation.
            let mut merged = Vec::new();
            for w in &values {
                let Wire::Bytes(b) = w else { return Err(bad()) };
                merged.extend_from_slice(b);
            }
            write_message(schema, m, &merged, depth + 1, &mut rendered)?;
        } else {
            let last = values[values.len() - 1];
            if !f.in_oneof() && is_zero(last) {
                continue;
            }
            write_value(schema, f, last, depth, &mut rendered)?;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(out, f.name.as_bytes());
        out.push(':');
        out.push_str(&rendered);
    }
    out.push('}');
    Ok(())
}

fn is_zero(w: &Wire) -> bool {
    match w {
        Wire::Varint(v) | Wire::Fixed64(v) => *v == 0,
        Wire::Fixed32(v) => *v == 0,
        Wire::Bytes(b) => b.is_empty(),
    }
}

fn write_value(
    schema: &Schema,
    f: &Field,
    w: &Wire,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), EncodeError> {
    let bad = || EncodeError(format!("field {} malformed from the server", f.name));
    match (&f.kind, w) {
        (Kind::Message(m), Wire::Bytes(b)) => write_message(schema, m, b, depth + 1, out),
        (Kind::String, Wire::Bytes(b)) => {
            push_json_string(out, b);
            Ok(())
        }
        (Kind::Bytes, Wire::Bytes(b)) => {
            out.push('"');
            push_base64(out, b);
            out.push('"');
            Ok(())
        }
        (_, Wire::Varint(v)) => {
            write_scalar(schema, &f.kind, *v, out);
            Ok(())
        }
        _ => Err(bad()),
    }
}

fn write_scalar(schema: &Schema, kind: &Kind, v: u64, out: &mut String) {
    match kind {
        Kind::Int64 => out.push_str(&format!("\"{}\"", v as i64)),
        Kind::Uint64 => out.push_str(&format!("\"{v}\"")),
        Kind::Int32 => out.push_str(&(v as i32).to_string()),
        Kind::Uint32 => out.push_str(&(v as u32).to_string()),
        Kind::Bool => out.push_str(if v != 0 { "true" } else { "false" }),
        Kind::Enum(e) => {
            let n = v as i32;
            let name = schema
                .enums
                .get(e)
                .and_then(|e| e.values.iter().find(|(_, num)| *num == n));
            match name {
                // Known values by name; an unknown one as its number,
                // unquoted, as jsonpb does.
                Some((name, _)) => push_json_string(out, name.as_bytes()),
                None => out.push_str(&n.to_string()),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::schema;
    use super::*;
    use crate::pb::etcdserverpb as pb;
    use bytes::Bytes;
    use prost::Message;

    fn req<M: Message + Default>(name: &str, json: &str) -> std::result::Result<M, DecodeError> {
        let s = schema().unwrap();
        check_valid(json.as_bytes()).map_err(DecodeError::Json)?;
        let b = from_json(s, name, json.as_bytes())?;
        Ok(M::decode(&b[..]).unwrap())
    }

    fn err(name: &str, json: &str) -> String {
        match req::<pb::RangeRequest>(name, json) {
            Err(DecodeError::Json(e)) => e,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn requests_decode_as_jsonpb_does() {
        let r: pb::RangeRequest = req(
            "etcdserverpb.RangeRequest",
            r#"{"key":"Zm9v","rangeEnd":"AA==","range_end":"Zm9w","limit":"5","revision":7,
               "sort_order":"DESCEND","sortTarget":2,"keys_only":true,"unknown":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!(r.key, Bytes::from_static(b"foo"));
        assert_eq!(r.range_end, Bytes::from_static(b"\0"), "camelCase wins");
        assert_eq!((r.limit, r.revision), (5, 7));
        assert_eq!(r.sort_order, pb::range_request::SortOrder::Descend as i32);
        assert_eq!(r.sort_target, 2);
        assert!(r.keys_only);
        let t: pb::TxnRequest = req(
            "etcdserverpb.TxnRequest",
            r#"{"compare":[{"key":"YQ==","version":null,"target":"VERSION"}],
               "success":[{"request_put":{"key":"YQ==","value":""}},{"request_put":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            t.compare[0].target_union,
            Some(pb::compare::TargetUnion::Version(0))
        );
        assert_eq!(t.success.len(), 2);
        assert_eq!(t.success[1].request, None);
        let w: pb::WatchRequest = req(
            "etcdserverpb.WatchRequest",
            r#"{"create_request":{"key":"YQ==","filters":["NODELETE",0]}}"#,
        )
        .unwrap();
        let Some(pb::watch_request::RequestUnion::CreateRequest(c)) = w.request_union else {
            panic!("{w:?}")
        };
        assert_eq!(c.filters, [1, 0]);
        let k: pb::RangeRequest =
            req("etcdserverpb.RangeRequest", r#"{"key":[102,111,111]}"#).unwrap();
        assert_eq!(k.key, Bytes::from_static(b"foo"));
    }

    #[test]
    fn request_errors_are_gos() {
        let r = "etcdserverpb.RangeRequest";
        assert_eq!(
            err(r, r#"{"key":12}"#),
            "json: cannot unmarshal number into Go value of type []uint8"
        );
        assert_eq!(
            err(r, r#"{"key":"Zm9"}"#),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            err(r, r#"{"limit":"abc"}"#),
            "invalid character 'a' looking for beginning of value"
        );
        assert_eq!(
            err(r, r#"{"limit":"12a"}"#),
            "invalid character 'a' after top-level value"
        );
        assert_eq!(err(r, r#"{"limit":""}"#), "unexpected end of JSON input");
        assert_eq!(
            err(r, r#"{"limit":1.5}"#),
            "json: cannot unmarshal number 1.5 into Go value of type int64"
        );
        assert_eq!(
            err(r, r#"{"limit":true}"#),
            "json: cannot unmarshal bool into Go value of type int64"
        );
        assert_eq!(
            err(r, r#"{"keys_only":"true"}"#),
            "json: cannot unmarshal string into Go value of type bool"
        );
        assert_eq!(
            err(r, "[]"),
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
        assert_eq!(
            err(r, r#"{"sort_order":"FOO"}"#),
            "unknown value \"FOO\" for enum etcdserverpb.RangeRequest_SortOrder"
        );
        assert_eq!(
            err(r, r#"{"sort_order":true}"#),
            "json: cannot unmarshal bool into Go value of type etcdserverpb.RangeRequest_SortOrder"
        );
        assert_eq!(
            err(r, r#"{"revision":"99999999999999999999"}"#),
            "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"
        );
        assert_eq!(
            err(r, r#"{"key":[1,1111]}"#),
            "json: cannot unmarshal number 1111 into Go value of type uint8"
        );
        let t = "etcdserverpb.TxnRequest";
        assert_eq!(
            err(t, r#"{"compare":{"key":"Zm9v"}}"#),
            "json: cannot unmarshal object into Go value of type []json.RawMessage"
        );
        assert_eq!(
            err(t, r#"{"success":[3]}"#),
            "json: cannot unmarshal number into Go value of type map[string]json.RawMessage"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut json = String::new();
        for _ in 0..=NESTING_DEPTH_MAX {
            json.push_str(r#"{"success":[{"request_txn":"#);
        }
        json.push_str("{}");
        for _ in 0..=NESTING_DEPTH_MAX {
            json.push_str("}]}");
        }
        let s = schema().unwrap();
        assert_eq!(
            from_json(s, "etcdserverpb.TxnRequest", json.as_bytes()),
            Err(DecodeError::TooDeep)
        );
    }

    #[test]
    fn responses_are_written_as_etcds_gateway_writes_them() {
        let s = schema().unwrap();
        let resp = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 14959226885255842847,
                member_id: 1,
                revision: 3,
                raft_term: 2,
            }),
            kvs: vec![ferrokv_kv(b"foo", b"")],
            more: false,
            count: 1,
        };
        assert_eq!(
            to_json(s, "etcdserverpb.RangeResponse", &resp.encode_to_vec()).unwrap(),
            r#"{"header":{"cluster_id":"14959226885255842847","member_id":"1","revision":"3","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2"}],"count":"1"}"#
        );
        let txn = pb::TxnResponse {
            header: Some(pb::ResponseHeader::default()),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseTxn(pb::TxnResponse {
                    header: Some(pb::ResponseHeader::default()),
                    succeeded: true,
                    responses: vec![],
                })),
            }],
        };
        assert_eq!(
            to_json(s, "etcdserverpb.TxnResponse", &txn.encode_to_vec()).unwrap(),
            r#"{"header":{},"responses":[{"response_txn":{"header":{},"succeeded":true}}]}"#
        );
        let ev = crate::pb::mvccpb::Event {
            r#type: 1,
            kv: Some(ferrokv_kv(b"k", b"")),
            prev_kv: None,
        };
        assert_eq!(
            to_json(s, "mvccpb.Event", &ev.encode_to_vec()).unwrap(),
            r#"{"type":"DELETE","kv":{"key":"aw==","create_revision":"2","mod_revision":"3","version":"2"}}"#
        );
        let st = pb::StatusResponse {
            version: "3.4.23<".into(),
            db_size: 20480,
            ..Default::default()
        };
        assert_eq!(
            to_json(s, "etcdserverpb.StatusResponse", &st.encode_to_vec()).unwrap(),
            r#"{"version":"3.4.23\u003c","dbSize":"20480"}"#
        );
        assert_eq!(to_json(s, "etcdserverpb.AlarmResponse", &[]).unwrap(), "{}");
    }

    fn ferrokv_kv(key: &'static [u8], value: &'static [u8]) -> crate::pb::mvccpb::KeyValue {
        crate::pb::mvccpb::KeyValue {
            key: Bytes::from_static(key),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: Bytes::from_static(value),
            lease: 0,
        }
    }
}

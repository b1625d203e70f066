//! Normalizing etcdctl output before two servers' outputs are compared.
//!
//! Only what legitimately differs between two correct servers is replaced,
//! each by a named placeholder, so a normalized diff stays readable:
//!
//! | what | where | why it differs |
//! |---|---|---|
//! | `cluster_id`, `member_id`, `ID` | `-w json` headers, member list | derived from each server's own peer URL (etcd's rules, both servers) |
//! | `raft_term` | `-w json` headers | counts elections, not KV semantics |
//! | `ClusterID`, `MemberID`, `RaftTerm` | `-w fields` | the same three, other format |
//! | the member's ids as literals | anywhere (e.g. hex id in `member list`) | the same |
//! | client/peer URLs and addresses | anywhere | each test server has its own port |
//! | `ts`, `target` of etcdctl's client log lines | stderr | wall clock, random client UUID |
//! | `took = ...`, `"took":...` | `endpoint health` | timing |
//!
//! Revisions, keys, values, versions, counts, `more`, exit codes and error
//! text are never normalized: they are the behaviour under test. Further
//! fields are normalized per script with `!normalize-json`, and each script
//! says why in its header.

use crate::etcdctl::Output;
use crate::server::{ServerCluster, ServerProcess};

/// JSON (and `-w fields`) keys whose values are always replaced.
const ALWAYS_NORMALIZED_KEYS: &[&str] = &[
    // -w json response headers and member list
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    // -w fields
    "ClusterID",
    "MemberID",
    "RaftTerm",
    // etcdctl's own zap log lines on stderr
    "ts",
    "target",
    // endpoint health -w json
    "took",
];

/// Replaces setup- and time-dependent parts of etcdctl output.
#[derive(Clone, Debug, Default)]
pub struct Normalizer {
    /// Exact substrings and their placeholders, applied in order.
    literals: Vec<(String, String)>,
    /// Keys whose values become `<key>`.
    keys: Vec<String>,
    /// Keys a script normalized; dropped whole, see `normalize`.
    script_keys: Vec<String>,
}

impl Normalizer {
    /// The always-on rules, without any server-specific literal.
    pub fn new() -> Self {
        Normalizer {
            literals: Vec::new(),
            keys: ALWAYS_NORMALIZED_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            script_keys: Vec::new(),
        }
    }

    /// The always-on rules plus `server`'s URLs, addresses and ids.
    pub fn for_server(server: &ServerProcess) -> Self {
        let mut n = Normalizer::new();
        // URLs before bare addresses: the address is a substring of the URL.
        n.add_literal(&server.client_url(), "<client-url>");
        n.add_literal(&server.peer_url(), "<peer-url>");
        n.add_literal(&server.client_addr().to_string(), "<client-addr>");
        n.add_literal(&server.peer_addr().to_string(), "<peer-addr>");
        if let Some((cluster_id, member_id)) = server.ids() {
            n.add_literal(&cluster_id.to_string(), "<cluster_id>");
            n.add_literal(&member_id.to_string(), "<member_id>");
            // `member list` and `endpoint status` print the member id in
            // hex (ids are derived from the peer URL, which each test
            // server has its own of).
            n.add_literal(&format!("{member_id:x}"), "<member_id>");
        }
        n
    }

    /// The always-on rules plus every member's URLs, addresses and ids, each
    /// replaced by a placeholder naming the member (`<client-url:m1>`,
    /// `<id:m2>`), and the cluster id: two clusters whose members have the
    /// same names compare equal.
    pub fn for_cluster(cluster: &ServerCluster) -> Self {
        let mut n = Normalizer::new();
        // URLs before bare addresses: the address is a substring of the URL.
        for m in &cluster.members {
            n.add_literal(&m.client_url(), &format!("<client-url:{}>", m.name()));
            n.add_literal(&m.peer_url(), &format!("<peer-url:{}>", m.name()));
        }
        for m in &cluster.members {
            n.add_literal(
                &m.client_addr().to_string(),
                &format!("<client-addr:{}>", m.name()),
            );
            n.add_literal(
                &m.peer_addr().to_string(),
                &format!("<peer-addr:{}>", m.name()),
            );
        }
        let mut cluster_ids = Vec::new();
        for m in &cluster.members {
            let (cluster_id, member_id) = m
                .ids()
                .unwrap_or_else(|| panic!("{} {}: no ids (is it running?)", m.kind(), m.name()));
            n.add_literal(&member_id.to_string(), &format!("<id:{}>", m.name()));
            n.add_literal(&format!("{member_id:x}"), &format!("<id:{}>", m.name()));
            cluster_ids.push(cluster_id);
        }
        cluster_ids.dedup();
        assert_eq!(
            cluster_ids.len(),
            1,
            "members report different cluster ids: {cluster_ids:?}"
        );
        n.add_literal(&cluster_ids[0].to_string(), "<cluster_id>");
        n.add_literal(&format!("{:x}", cluster_ids[0]), "<cluster_id>");
        n
    }

    pub fn add_literal(&mut self, text: &str, placeholder: &str) {
        assert!(!text.is_empty(), "empty literal would match everywhere");
        self.literals
            .push((text.to_string(), placeholder.to_string()));
    }

    /// Also replace the values of these keys.
    pub fn add_keys<S: AsRef<str>>(&mut self, keys: &[S]) {
        self.keys
            .extend(keys.iter().map(|k| k.as_ref().to_string()));
        self.script_keys
            .extend(keys.iter().map(|k| k.as_ref().to_string()));
    }

    pub fn normalize(&self, text: &str) -> String {
        let mut out = text.to_string();
        for key in &self.keys {
            out = replace_key_values(&out, key);
        }
        for key in &self.script_keys {
            // proto3 JSON omits zero values, so a normalized field may be
            // present on one side only (a fresh ferrokv store has dbSize 0);
            // once its value no longer counts, neither does its presence.
            out = out
                .replace(&format!(",\"{key}\":<{key}>"), "")
                .replace(&format!("\"{key}\":<{key}>,"), "");
        }
        out = replace_after_marker(&out, "took = ", "<took>");
        for (literal, placeholder) in &self.literals {
            out = out.replace(literal.as_str(), placeholder);
        }
        out
    }

    pub fn normalize_output(&self, out: &Output) -> Output {
        Output {
            stdout: self.normalize(&out.stdout),
            stderr: client_log_sorted(&self.normalize(&out.stderr)),
            code: out.code,
        }
    }
}

/// The client's own log lines (`{"level":...}`) sorted among themselves,
/// every other line where it was: etcdctl logs from goroutines that race
/// (`snapshot save`'s "fetching snapshot" comes before or after the stream's
/// error, against either server), so their order says nothing of the
/// server.
pub fn client_log_sorted(text: &str) -> String {
    let is_log = |l: &str| l.starts_with("{\"level\":");
    let mut logs: Vec<&str> = text.lines().filter(|l| is_log(l)).collect();
    if logs.len() < 2 {
        return text.to_string();
    }
    logs.sort_unstable();
    let mut logs = logs.into_iter();
    let mut out: Vec<&str> = Vec::new();
    for l in text.lines() {
        out.push(if is_log(l) {
            logs.next().unwrap_or(l)
        } else {
            l
        });
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// Replaces the value in every `"key":value` / `"key" : value` with `<key>`.
/// A value is a JSON string (escapes honoured) or a run of characters up to
/// `,` `}` `]` or whitespace (numbers, booleans).
pub fn replace_key_values(text: &str, key: &str) -> String {
    let needle = format!("\"{key}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&needle) {
        let after_key = &rest[pos + needle.len()..];
        let colon = after_key.len() - after_key.trim_start_matches(' ').len();
        if !after_key[colon..].starts_with(':') {
            out.push_str(&rest[..pos + needle.len()]);
            rest = after_key;
            continue;
        }
        let after_colon = &after_key[colon + 1..];
        let spaces = after_colon.len() - after_colon.trim_start_matches(' ').len();
        let value = &after_colon[spaces..];
        let value_len = value_len(value);
        let prefix_len = pos + needle.len() + colon + 1 + spaces;
        out.push_str(&rest[..prefix_len]);
        out.push('<');
        out.push_str(key);
        out.push('>');
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

fn value_len(value: &str) -> usize {
    let bytes = value.as_bytes();
    if bytes.first() == Some(&b'"') {
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        return bytes.len();
    }
    value
        .find(|c: char| matches!(c, ',' | '}' | ']') || c.is_whitespace())
        .unwrap_or(value.len())
}

/// Replaces the word after each `marker` (up to whitespace) with `placeholder`.
fn replace_after_marker(text: &str, marker: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(marker) {
        out.push_str(&rest[..pos + marker.len()]);
        out.push_str(placeholder);
        let after = &rest[pos + marker.len()..];
        let word = after.find(char::is_whitespace).unwrap_or(after.len());
        rest = &after[word..];
    }
    out.push_str(rest);
    out
}

/// The cells of an etcdctl `-w table` output, one row per line between the
/// `|`s (header row first), borders dropped, every cell trimmed. Column
/// widths follow the longest cell, so two tables whose cells differ only in
/// normalized values compare equal cell by cell, not as text.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
            Some(inner.split('|').map(|c| c.trim().to_string()).collect())
        })
        .collect()
}

/// The first `"key":<unsigned number>` in `text`.
pub fn json_u64_field(text: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let start = text.find(&needle)? + needle.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_ids_and_term_are_replaced_revision_is_kept() {
        let json = r#"{"header":{"cluster_id":13807887513569586722,"member_id":1886424282058903940,"revision":4,"raft_term":2},"kvs":[]}"#;
        assert_eq!(
            Normalizer::new().normalize(json),
            r#"{"header":{"cluster_id":<cluster_id>,"member_id":<member_id>,"revision":4,"raft_term":<raft_term>},"kvs":[]}"#
        );
    }

    #[test]
    fn fields_output_is_replaced() {
        let fields = "\"ClusterID\" : 1380\n\"MemberID\" : 1886\n\"Revision\" : 5\n\"RaftTerm\" : 2\n\"Key\" : \"ts\"\n";
        assert_eq!(
            Normalizer::new().normalize(fields),
            "\"ClusterID\" : <ClusterID>\n\"MemberID\" : <MemberID>\n\"Revision\" : 5\n\"RaftTerm\" : <RaftTerm>\n\"Key\" : \"ts\"\n"
        );
    }

    #[test]
    fn client_log_line_keeps_the_grpc_error() {
        let line = r#"{"level":"warn","ts":"2026-11-24T13:12:35.856Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-63a8/127.0.0.9:23790","attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}"#;
        assert_eq!(
            Normalizer::new().normalize(line),
            r#"{"level":"warn","ts":<ts>,"caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":<target>,"attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}"#
        );
    }

    #[test]
    fn health_timing_and_literals() {
        let mut n = Normalizer::new();
        n.add_literal("http://127.0.0.9:23790", "<client-url>");
        assert_eq!(
            n.normalize("http://127.0.0.9:23790 is healthy: successfully committed proposal: took = 1.765518ms\n"),
            "<client-url> is healthy: successfully committed proposal: took = <took>\n"
        );
        assert_eq!(
            n.normalize(r#"[{"endpoint":"http://127.0.0.9:23790","health":true,"took":"2.9ms"}]"#),
            r#"[{"endpoint":"<client-url>","health":true,"took":<took>}]"#
        );
    }

    #[test]
    fn escaped_quotes_in_string_values() {
        assert_eq!(
            replace_key_values(r#"{"ts":"a\"b","x":1}"#, "ts"),
            r#"{"ts":<ts>,"x":1}"#
        );
    }

    #[test]
    fn key_without_colon_is_not_a_field() {
        assert_eq!(
            replace_key_values(r#""ID", "ID" x"#, "ID"),
            r#""ID", "ID" x"#
        );
    }

    #[test]
    fn table_cells_without_borders_or_padding() {
        let table = "+----+---------+\n| ID | NAME    |\n+----+---------+\n| 1a |  m1     |\n| 2b |  longer |\n+----+---------+\n";
        assert_eq!(
            table_rows(table),
            vec![vec!["ID", "NAME"], vec!["1a", "m1"], vec!["2b", "longer"]]
        );
        assert!(table_rows("OK\n").is_empty());
    }

    #[test]
    fn client_log_lines_are_sorted_among_themselves() {
        let a =
            "{\"level\":\"info\",\"msg\":\"b\"}\n{\"level\":\"warn\",\"msg\":\"a\"}\nError: x\n";
        let b =
            "{\"level\":\"warn\",\"msg\":\"a\"}\n{\"level\":\"info\",\"msg\":\"b\"}\nError: x\n";
        assert_eq!(client_log_sorted(a), client_log_sorted(b));
        assert!(client_log_sorted(a).ends_with("Error: x\n"));
        assert_eq!(client_log_sorted("Error: x"), "Error: x");
    }

    #[test]
    fn u64_field() {
        assert_eq!(
            json_u64_field(r#"{"member_id":42,"x":1}"#, "member_id"),
            Some(42)
        );
        assert_eq!(json_u64_field(r#"{"x":1}"#, "member_id"), None);
    }
}

//! The JSON gateway (`POST /v3/...`) side by side with etcd 3.4.23: the
//! same curl requests to both, answers compared (status, content type,
//! body) after the ids, terms and addresses that legitimately differ are
//! normalized. Streams (watch, lease keep-alive, snapshot) are read line
//! by line over a plain socket; HTTP/2 over TLS is compared with etcd,
//! HTTP/2 with prior knowledge (which etcd's plain port does not serve
//! as gateway) with ferrokv's own HTTP/1.1 answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrokv_tests::server::{ferroutl_bin, ServerKind, ServerOptions, ServerProcess};
use ferrokv_tests::{EtcdProcess, FerrokvProcess, Normalizer};

/// Bound on one request, and on waiting for one streamed line.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One curl request: (HTTP status, content type, body).
fn curl(url: &str, body: &[u8], extra: &[&str]) -> (u16, String, String) {
    let mut child = Command::new("curl")
        .args(["-s", "--max-time", "10", "--data-binary", "@-"])
        .args(["-o", "-", "-w", "\n%{http_code} %{content_type}"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("body written");
    let out = child.wait_with_output().expect("curl ends");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, content_type) = status.split_once(' ').unwrap_or((status, ""));
    (
        code.parse().unwrap_or(0),
        content_type.to_string(),
        body.to_string(),
    )
}

/// HTTP/2 requests answered before their body is read, one after another
/// (each lost its answer one time in 25 before the fix).
const H2_EARLY_ANSWERS: usize = 150;

fn url(server: &ServerProcess, path: &str) -> String {
    format!("http://{}{path}", server.client_addr())
}

/// etcd's and ferrokv's answers to `POST path body`, normalized.
fn both(etcd: &ServerProcess, ferrokv: &ServerProcess, path: &str, body: &str) -> [String; 2] {
    [etcd, ferrokv].map(|s| {
        let (code, ct, text) = curl(&url(s, path), body.as_bytes(), &[]);
        let mut n = Normalizer::for_server(s);
        // Values computed differently by design (docs/compatibility.md):
        // hashes, sizes and raft indexes of a different storage engine.
        n.add_keys(&[
            "hash",
            "dbSize",
            "dbSizeInUse",
            "raftIndex",
            "raftAppliedIndex",
            "raftTerm",
            "leader",
        ]);
        format!("{code} {ct}\n{}", n.normalize(&text))
    })
}

fn assert_same(etcd: &ServerProcess, ferrokv: &ServerProcess, path: &str, body: &str) -> String {
    let [want, got] = both(etcd, ferrokv, path, body);
    assert_eq!(got, want, "POST {path} {body}");
    got
}

/// etcd and ferrokv, one member each, of the same name (member lists
/// compare equal).
fn start_both(dir: &std::path::Path) -> (EtcdProcess, FerrokvProcess) {
    let opts = ServerOptions {
        name: Some("gw".into()),
        ..Default::default()
    };
    (
        EtcdProcess::start_with(&dir.join("etcd"), opts.clone()),
        FerrokvProcess::start_with(&dir.join("ferrokv"), opts),
    )
}

#[test]
fn unary_calls_and_their_errors_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    let script: &[(&str, &str)] = &[
        // kv, with binary keys and values (base64 both ways)
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"AP8BgA==","value":"//79AA==","prev_kv":true}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"AP8BgA==","value":"","prev_kv":true}"#,
        ),
        ("/v3/kv/range", r#"{"key":"AA==","range_end":"AA=="}"#),
        ("/v3/kv/range", r#"{"key":[0,255,1,128]}"#),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"DESCEND","sortTarget":"KEY","keysOnly":true}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","limit":"1","revision":2,"unknown_field":[1,{"x":null}]}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","serializable":true,"count_only":true}"#,
        ),
        ("/v3beta/kv/range", r#"{"key":"Zm9v"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmF6"} trailing bytes are not read"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","version":"2","result":"EQUAL","target":"VERSION"},
                {"key":"Zm9v","value":"YmF6","target":"VALUE","result":"NOT_EQUAL"}],
              "success":[{"request_put":{"key":"YQ==","value":"Yg=="}}],
              "failure":[{"request_range":{"key":"Zm9v"}},{"request_delete_range":{"key":"eA==","prev_kv":true}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","mod_revision":"3","target":"MOD","result":"LESS"}],"success":[{"request_put":{"key":"YQ==","value":"Yw=="}}]}"#,
        ),
        ("/v3/kv/deleterange", r#"{"key":"YQ==","prev_kv":true}"#),
        ("/v3/kv/deleterange", r#"{"key":"AA==","range_end":"AA=="}"#),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
        ("/v3/kv/compaction", r#"{"revision":"2"}"#),
        ("/v3/kv/compaction", r#"{"revision":"1000"}"#),
        // leases, and etcd's /v3/kv/lease/* aliases
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"7"}"#),
        ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#),
        ("/v3/kv/put", r#"{"key":"bA==","value":"dg==","lease":"7"}"#),
        ("/v3/lease/leases", "{}"),
        ("/v3/kv/lease/leases", ""),
        ("/v3/lease/timetolive", r#"{"ID":"7","keys":true}"#),
        ("/v3/kv/lease/timetolive", r#"{"ID":"8"}"#),
        ("/v3/kv/put", r#"{"key":"bA==","lease":"8"}"#),
        ("/v3/lease/revoke", r#"{"ID":"7"}"#),
        ("/v3/kv/lease/revoke", r#"{"ID":"7"}"#),
        ("/v3/kv/range", r#"{"key":"bA=="}"#),
        // cluster and maintenance
        ("/v3/cluster/member/list", "{}"),
        ("/v3/cluster/member/remove", r#"{"ID":"1"}"#),
        (
            "/v3/cluster/member/update",
            r#"{"ID":"1","peerURLs":["http://127.0.0.1:1"]}"#,
        ),
        ("/v3/cluster/member/promote", r#"{"ID":"1"}"#),
        ("/v3/maintenance/status", "{}"),
        ("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
        ("/v3/maintenance/hash", "{}"),
        // etcd 3.4's DefragmentResponse has no header: `{}`
        ("/v3/maintenance/defragment", "{}"),
        ("/v3/maintenance/transfer-leadership", r#"{"targetID":"1"}"#),
        // txn operations without a request (a message member given null
        // is not on the wire): etcd's checkRequestOp, "key not found",
        // in either branch and nested
        ("/v3/kv/txn", r#"{"success":[{"request_put":null}]}"#),
        ("/v3/kv/txn", r#"{"failure":[{}]}"#),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_txn":{"failure":[{"request_range":null}]}}]}"#,
        ),
        ("/v3/kv/txn", r#"{"success":[{"request_put":{}}]}"#),
        // a txn inside a txn: its response's header is empty (etcd's
        // newTxnResp), only the outer one filled in
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_txn":{"success":[{"request_range":{"key":"Zm9v"}}]}}]}"#,
        ),
        // malformed JSON and wrong types: Go's words, InvalidArgument
        ("/v3/kv/put", r#"{"key":"Zm9v","#),
        ("/v3/kv/put", r#"{"key":x}"#),
        ("/v3/kv/put", "{\"key\":\"\u{ff}\"}"),
        ("/v3/kv/put", r#"{"key":12}"#),
        ("/v3/kv/put", r#"{"key":"Zm9"}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":"abc"}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":"12a"}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":1.5}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":true}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","prev_kv":"true"}"#),
        ("/v3/kv/put", "[]"),
        ("/v3/kv/put", r#""x""#),
        ("/v3/kv/put", "null"),
        ("/v3/kv/put", ""),
        ("/v3/kv/range", r#"{"key":"Zm9v","sort_order":"FOO"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","sort_order":true}"#),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","revision":"99999999999999999999"}"#,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":""}"#),
        ("/v3/kv/range", r#"{"key":[102,111,1111]}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v", "x": tru}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v" "x"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v", 3}"#),
        ("/v3/kv/range", r#"{"key":"\x01"}"#),
        ("/v3/kv/txn", r#"{"compare":{"key":"Zm9v"}}"#),
        ("/v3/kv/txn", r#"{"success":[3]}"#),
        // streams whose first request is bad: the decoder's error (Unknown)
        ("/v3/lease/keepalive", "x"),
        ("/v3/watch", "{\"create_request\":"),
        // unknown paths, and the alias etcd 3.4 no longer has
        ("/v3/kv/nothing", "{}"),
        ("/v3/auth/status", "{}"),
        ("/v3/kv/range/", "{}"),
        ("/v3/kv/range:verb", "{}"),
    ];
    for (path, body) in script {
        assert_same(&etcd, &ferrokv, path, body);
    }
    // --max-txn-ops (128) counts a nested txn's operations against what
    // its parent's largest list leaves (etcd passes maxTxnOps-opc down);
    // both branches are checked, the one not taken too.
    let puts: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"request_put":{{"key":"{}"}}}}"#, b64(&format!("k{i}"))))
        .collect();
    for nested_ops in [27, 28] {
        let ranges = vec![r#"{"request_range":{"key":"YQ=="}}"#; nested_ops].join(",");
        let body = format!(
            r#"{{"failure":[{},{{"request_txn":{{"success":[{ranges}]}}}}]}}"#,
            puts.join(",")
        );
        assert_same(&etcd, &ferrokv, "/v3/kv/txn", &body);
    }
    // Leadership moved to the member itself: done at once, and etcd
    // 3.4's MoveLeaderResponse has no header (as Defragment's).
    let moved = [&*etcd, &*ferrokv].map(|s| {
        let (_, member_id) = s.ids().expect("member id");
        let body = format!(r#"{{"targetID":"{member_id}"}}"#);
        let (code, ct, text) = curl(
            &url(s, "/v3/maintenance/transfer-leadership"),
            body.as_bytes(),
            &[],
        );
        format!("{code} {ct} {text}")
    });
    assert_eq!(moved[1], moved[0]);
    assert_eq!(moved[0], "200 application/json {}", "etcd's answer");
    // Wrong HTTP methods on gateway paths, and CORS preflight; etcd 3.4
    // has no /v3alpha/ (outside the gateway: Go's mux's 404 page, as for
    // any path nothing serves).
    for s in [&*etcd, &*ferrokv] {
        for (path, method) in [("/v3alpha/kv/range", "POST"), ("/nothing", "GET")] {
            let (code, ct, body) = curl(&url(s, path), b"{}", &["-X", method]);
            assert_eq!(
                (code, ct.as_str(), body.as_str()),
                (404, "text/plain; charset=utf-8", "404 page not found\n"),
                "{} {method} {path}",
                s.kind()
            );
            let (_, _, head) = curl(
                &url(s, path),
                b"",
                &["-X", method, "-D", "-", "-o", "/dev/null"],
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains("x-content-type-options: nosniff"),
                "{} {method} {path}: {head}",
                s.kind()
            );
        }
        let (code, ct, body) = curl(&url(s, "/v3/kv/range"), b"", &["-X", "GET"]);
        assert_eq!(
            (code, ct.as_str(), body.as_str()),
            (405, "text/plain; charset=utf-8", "Method Not Allowed\n"),
            "{}",
            s.kind()
        );
        let (code, _, body) = curl(&url(s, "/v3/kv/put"), b"", &["-X", "OPTIONS"]);
        assert_eq!((code, body.as_str()), (200, ""), "{}", s.kind());
    }
    // Both answer CORS headers on gateway answers.
    for s in [&*etcd, &*ferrokv] {
        let (_, _, head) = curl(
            &url(s, "/v3/kv/range"),
            br#"{"key":"YQ=="}"#,
            &["-D", "-", "-o", "/dev/null"],
        );
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("access-control-allow-origin: *"),
            "{}: {head}",
            s.kind()
        );
        assert!(
            head.contains("grpc-metadata-content-type: application/grpc"),
            "{}: {head}",
            s.kind()
        );
    }
}

/// Auth through the gateway: management calls, `authenticate` handing out
/// a token, and that token in the `Authorization` header (as etcd3gw and
/// curl users send it) deciding every later call; no header, a bad token,
/// a denied key and a root-only call answer as etcd does.
#[test]
fn auth_with_tokens_answers_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    let setup: &[(&str, String)] = &[
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#.into(),
        ),
        ("/v3/auth/role/add", r#"{"name":"root"}"#.into()),
        (
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#.into(),
        ),
        ("/v3/auth/role/add", r#"{"name":"app"}"#.into()),
        (
            "/v3/auth/role/grant",
            format!(
                r#"{{"name":"app","perm":{{"permType":"READWRITE","key":"{}","range_end":"{}"}}}}"#,
                b64("/app/"),
                b64("/app0")
            ),
        ),
        (
            "/v3/auth/user/add",
            r#"{"name":"alice","password":"alicepw"}"#.into(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"alice","role":"app"}"#.into(),
        ),
        ("/v3/auth/role/get", r#"{"role":"app"}"#.into()),
        ("/v3/auth/user/list", "{}".into()),
        ("/v3/auth/enable", "{}".into()),
        (
            "/v3/auth/authenticate",
            r#"{"name":"alice","password":"nope"}"#.into(),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("/app/x"))),
    ];
    for (path, body) in setup {
        assert_same(&etcd, &ferrokv, path, body);
    }
    let token = |s: &ServerProcess, name: &str, password: &str| {
        let body = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
        let (code, _, text) = curl(&url(s, "/v3/auth/authenticate"), body.as_bytes(), &[]);
        assert_eq!(code, 200, "{} authenticate {name}: {text}", s.kind());
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["token"].as_str().expect("a token").to_string()
    };
    let with_tokens: &[(&str, &str, String)] = &[
        (
            "alice",
            "/v3/kv/put",
            format!(r#"{{"key":"{}","value":"MQ=="}}"#, b64("/app/x")),
        ),
        (
            "alice",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        (
            "alice",
            "/v3/kv/put",
            format!(r#"{{"key":"{}","value":"MQ=="}}"#, b64("/other")),
        ),
        ("alice", "/v3/auth/user/list", "{}".into()),
        ("alice", "/v3/auth/user/get", r#"{"name":"alice"}"#.into()),
        (
            "bad",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        ("root", "/v3/auth/user/list", "{}".into()),
        (
            "root",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        // grpc-gateway's metadata header carries a token too.
        (
            "alice-md",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        ("root", "/v3/auth/disable", "{}".into()),
        (
            "none",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        // etcd looks a token up even with auth disabled.
        (
            "bad",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
        (
            "alice",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("/app/x")),
        ),
    ];
    let answers = [&*etcd, &*ferrokv].map(|s| {
        let alice = token(s, "alice", "alicepw");
        let root = token(s, "root", "rootpw");
        let mut n = Normalizer::for_server(s);
        n.add_keys(&["raftTerm"]);
        with_tokens
            .iter()
            .map(|(who, path, body)| {
                let header = match *who {
                    "alice" => format!("Authorization: {alice}"),
                    "root" => format!("Authorization: {root}"),
                    "bad" => "Authorization: notatoken.1".to_string(),
                    "alice-md" => format!("Grpc-Metadata-Token: {alice}"),
                    _ => "X-Nothing: 1".to_string(),
                };
                let (code, ct, text) = curl(&url(s, path), body.as_bytes(), &["-H", &header]);
                format!("{who} {path}: {code} {ct}\n{}", n.normalize(&text))
            })
            .collect::<Vec<_>>()
    });
    for (want, got) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(got, want);
    }
}

#[test]
fn oversized_requests_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    // Over --max-request-bytes (1.5 MiB): etcd's "request is too large";
    // over the gRPC limit 512 KiB above it: grpc-go's words with the
    // message size, the same on both as the encodings agree.
    for value_bytes in [1536 * 1024 + 10, 2100 * 1024] {
        let value = "A".repeat(value_bytes / 3 * 4);
        let body = format!(r#"{{"key":"YQ==","value":"{value}"}}"#);
        let got = assert_same(&etcd, &ferrokv, "/v3/kv/put", &body);
        assert!(got.starts_with("400 ") || got.starts_with("429 "), "{got}");
    }
    // A body far over any message the server would take is refused
    // before it is read whole (etcd would read it all).
    let huge = format!(r#"{{"key":"YQ==","value":"{}"}}"#, "A".repeat(12 << 20));
    let (code, _, body) = curl(&url(&ferrokv, "/v3/kv/put"), huge.as_bytes(), &[]);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("\"code\":8"), "{body}");
    let (code, _, _) = curl(&url(&ferrokv, "/v3/kv/range"), br#"{"key":"YQ=="}"#, &[]);
    assert_eq!(code, 200, "still serving");
}

/// A streamed answer read line by line (HTTP/1.1 chunked).
struct Stream {
    reader: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, body: &str) -> (u16, Stream) {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("header");
            if h == "\r\n" || h.is_empty() {
                break;
            }
        }
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (
            code,
            Stream {
                reader,
                pending: Vec::new(),
            },
        )
    }

    /// The next line of the body; None when the body ended.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }
}

fn normalized_line(server: &ServerProcess, stream: &mut Stream) -> String {
    let line = stream
        .line()
        .unwrap_or_else(|| panic!("{}: stream ended early", server.kind()));
    Normalizer::for_server(server).normalize(&line)
}

#[test]
fn streams_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    let mut lines: Vec<Vec<String>> = Vec::new();
    for s in [&*etcd, &*ferrokv] {
        let post = |path: &str, body: &str| curl(&url(s, path), body.as_bytes(), &[]);
        assert_eq!(
            post("/v3/kv/put", r#"{"key":"dw==","value":"MA=="}"#).0,
            200
        );
        let mut got = Vec::new();
        // A watch: created, then events as they happen (prev_kv, a
        // delete), a second watcher and a cancel in the same body.
        let (code, mut w) = Stream::open(
            s.client_addr(),
            "/v3/watch",
            r#"{"create_request":{"key":"dw==","prev_kv":true}} {"create_request":{"key":"dw==","start_revision":"1","filters":["NODELETE"]}}"#,
        );
        assert_eq!(code, 200);
        for _ in 0..3 {
            got.push(normalized_line(s, &mut w));
        }
        assert_eq!(
            post("/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#).0,
            200
        );
        assert_eq!(post("/v3/kv/deleterange", r#"{"key":"dw=="}"#).0, 200);
        // The two watchers' events of one revision may come in either
        // order (etcd does not order watchers among themselves).
        let mut events: Vec<String> = (0..3).map(|_| normalized_line(s, &mut w)).collect();
        events.sort();
        got.extend(events);
        // Closing the connection cancels the watch; the server serves on.
        drop(w);
        // Lease keep-alive: one answer per request in the body, then the
        // stream ends with the body; a lease not found answers TTL 0.
        assert_eq!(post("/v3/lease/grant", r#"{"TTL":"60","ID":"9"}"#).0, 200);
        let (code, mut k) = Stream::open(
            s.client_addr(),
            "/v3/lease/keepalive",
            r#"{"ID":"9"}{"ID":"9"}{"ID":"10"}"#,
        );
        assert_eq!(code, 200);
        for _ in 0..3 {
            got.push(normalized_line(s, &mut k));
        }
        assert_eq!(
            k.line(),
            None,
            "{}: keep-alive stream ends with its requests",
            s.kind()
        );
        let (code, ct, body) = curl(&url(s, "/v3/lease/keepalive"), b"", &[]);
        got.push(format!("{code} {ct} {body:?}"));
        lines.push(got);
    }
    assert_eq!(lines[1], lines[0]);

    // Snapshot: a stream of blobs that together are a backup each
    // server's own tool reads.
    for s in [&*etcd, &*ferrokv] {
        let (code, mut snap) = Stream::open(s.client_addr(), "/v3/maintenance/snapshot", "{}");
        assert_eq!(code, 200);
        let mut file = Vec::new();
        while let Some(line) = snap.line() {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let blob = v["result"]["blob"].as_str().unwrap_or_default();
            file.extend(base64_decode(blob));
        }
        let path = dir.path().join(format!("{}.db", s.kind()));
        std::fs::write(&path, &file).unwrap();
        let path = path.to_str().unwrap();
        let out = if s.kind() == ServerKind::Etcd {
            ferrokv_tests::etcdctl(
                &s.endpoint(),
                &["snapshot", "status", path, "-w", "json"],
                None,
            )
        } else {
            let bin = ferroutl_bin().unwrap_or_else(|e| panic!("{e}"));
            ferrokv_tests::etcdctl::tool(
                &bin,
                &["snapshot", "status", path, "-w", "json"],
                IO_TIMEOUT,
            )
        };
        assert_eq!(out.code, 0, "{}: {out:?}", s.kind());
        assert!(
            out.stdout.contains("\"revision\":"),
            "{}: {out:?}",
            s.kind()
        );
    }
    // The watchers of the closed watch are gone on ferrokv (the stream
    // notices its client left within a bounded time).
    wait_no_watchers(&ferrokv, "watchers left after the client went away");
}

/// Waits (within `IO_TIMEOUT`) until `server` holds no watcher, as its
/// `/metrics` says; `what` names the failure.
fn wait_no_watchers(server: &ServerProcess, what: &str) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let (_, metrics) = ferrokv_tests::http_get(server.client_addr(), "/metrics");
        if metrics.contains("etcd_debugging_mvcc_watcher_total 0") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Standard base64 with padding, as the gateway takes bytes.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let v = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(v >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let n = q.iter().filter(|&&c| c != b'=').count();
        let v = q.iter().take(n).enumerate().fold(0u32, |acc, (i, &c)| {
            acc | u32::from(value(c)) << (18 - 6 * i)
        });
        out.extend_from_slice(&v.to_be_bytes()[1..n.max(1)]);
    }
    out
}

/// etcd and ferrokv serving TLS with client certificates, and the files.
fn start_both_tls(
    dir: &std::path::Path,
) -> (ferrokv_tests::tls::TlsFiles, EtcdProcess, FerrokvProcess) {
    let tls = ferrokv_tests::tls::generate(&dir.join("tls"));
    let opts = ServerOptions {
        tls: Some(tls.clone()),
        ..Default::default()
    };
    let etcd = EtcdProcess::start_with(&dir.join("etcd"), opts.clone());
    let ferrokv = FerrokvProcess::start_with(&dir.join("ferrokv"), opts);
    (tls, etcd, ferrokv)
}

#[test]
fn http2_and_tls_answer_as_http11() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, etcd, ferrokv) = start_both_tls(dir.path());
    let cert = [
        "--cacert",
        tls.ca.to_str().unwrap(),
        "--cert",
        tls.cert.to_str().unwrap(),
        "--key",
        tls.key.to_str().unwrap(),
    ];
    let https = |s: &ServerProcess, path: &str| format!("https://{}{path}", s.client_addr());
    for version in ["--http1.1", "--http2"] {
        let mut answers = Vec::new();
        for s in [&*etcd, &*ferrokv] {
            let n = Normalizer::for_server(s);
            let mut got = Vec::new();
            for (path, body) in [
                ("/v3/kv/put", r#"{"key":"dGxz","value":"djE="}"#),
                ("/v3/kv/range", r#"{"key":"dGxz"}"#),
                ("/v3/kv/range", r#"{"key":1}"#),
            ] {
                let mut args = cert.to_vec();
                args.push(version);
                let (code, ct, text) = curl(&https(s, path), body.as_bytes(), &args);
                got.push(format!("{code} {ct} {}", n.normalize(&text)));
            }
            answers.push(got);
        }
        assert_eq!(answers[1], answers[0], "{version}");
    }

    // HTTP/2 with prior knowledge on a plain port: etcd sends that to its
    // gRPC server only; ferrokv serves the gateway there too, alike.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = FerrokvProcess::start(plain_dir.path());
    let put = curl(
        &url(&plain, "/v3/kv/put"),
        br#"{"key":"aDI=","value":"djI="}"#,
        &["--http2-prior-knowledge"],
    );
    assert_eq!(put.0, 200, "{put:?}");
    for (path, body) in [
        ("/v3/kv/range", r#"{"key":"aDI="}"#),
        ("/v3/kv/range", "{"),
        ("/v3/nothing", "{}"),
    ] {
        let h1 = curl(&url(&plain, path), body.as_bytes(), &[]);
        let h2 = curl(
            &url(&plain, path),
            body.as_bytes(),
            &["--http2-prior-knowledge"],
        );
        assert_eq!(h2, h1, "{path} {body}");
    }
    // An answer given before the body is read (an unknown path) once lost
    // the race with the stream's reset: 8 of 200 got no answer at all.
    for i in 0..H2_EARLY_ANSWERS {
        let h2 = curl(
            &url(&plain, "/v3/nothing"),
            b"{}",
            &["--http2-prior-knowledge"],
        );
        assert_eq!(h2.0, 404, "HTTP/2 request {i} to an unknown path: {h2:?}");
    }
    let (code, mut w) = Stream::open(
        plain.client_addr(),
        "/v3/watch",
        r#"{"create_request":{"key":"aDI="}}"#,
    );
    assert_eq!(code, 200);
    assert!(w.line().is_some_and(|l| l.contains("\"created\":true")));
}

/// The same refusals and answers on the gRPC path behind the gateway:
/// txn operations without a request, a nested txn over what its parent
/// leaves of `--max-txn-ops`, and the header-less answers of Defragment
/// and MoveLeader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_behind_the_gateway_match_etcd() {
    use ferrokv_tests::grpc::{connect, try_unary};
    use ferrokv_wire::pb::etcdserverpb::{
        request_op::Request, DefragmentRequest, DefragmentResponse, MoveLeaderRequest,
        MoveLeaderResponse, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
    };

    let op = |request| RequestOp {
        request: Some(request),
    };
    let range = || {
        op(Request::RequestRange(RangeRequest {
            key: "a".into(),
            ..Default::default()
        }))
    };
    let nested = |ops: Vec<RequestOp>| {
        op(Request::RequestTxn(TxnRequest {
            success: ops,
            ..Default::default()
        }))
    };
    // 100 puts and a nested txn: 27 operations are left for it.
    let over_budget = |nested_ops: usize| {
        let mut ops: Vec<RequestOp> = (0..100)
            .map(|i| {
                op(Request::RequestPut(PutRequest {
                    key: format!("k{i}").into(),
                    ..Default::default()
                }))
            })
            .collect();
        ops.push(nested((0..nested_ops).map(|_| range()).collect()));
        TxnRequest {
            failure: ops,
            ..Default::default()
        }
    };
    let txns = [
        TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        },
        TxnRequest {
            success: vec![range()],
            failure: vec![nested(vec![RequestOp { request: None }])],
            ..Default::default()
        },
        over_budget(27),
        over_budget(28),
    ];

    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = tokio::task::block_in_place(|| start_both(dir.path()));
    let mut answers = Vec::new();
    for s in [&*etcd, &*ferrokv] {
        let channel = connect(s).await;
        let mut got = Vec::new();
        for txn in txns.clone() {
            let r: Result<TxnResponse, _> = try_unary(&channel, "/etcdserverpb.KV/Txn", txn).await;
            got.push(match r {
                Ok(r) => format!("ok, succeeded {}", r.succeeded),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            });
        }
        let d: Result<DefragmentResponse, _> = try_unary(
            &channel,
            "/etcdserverpb.Maintenance/Defragment",
            DefragmentRequest {},
        )
        .await;
        got.push(format!("{d:?}"));
        let (_, member_id) = tokio::task::block_in_place(|| s.ids()).expect("member id");
        let m: Result<MoveLeaderResponse, _> = try_unary(
            &channel,
            "/etcdserverpb.Maintenance/MoveLeader",
            MoveLeaderRequest {
                target_id: member_id,
            },
        )
        .await;
        got.push(format!("{m:?}"));
        answers.push(got);
    }
    assert_eq!(answers[1], answers[0]);
    assert_eq!(
        answers[0],
        [
            "InvalidArgument: etcdserver: key not found",
            "InvalidArgument: etcdserver: key not found",
            "ok, succeeded true",
            "InvalidArgument: etcdserver: too many operations in txn request",
            "Ok(DefragmentResponse { header: None })",
            "Ok(MoveLeaderResponse { header: None })",
        ],
        "etcd's answers"
    );
}

/// One raw HTTP/1.1 answer: status, headers (lower-case, sorted, `Date`
/// left out, a Content-Length's value too: ids differ in length), body
/// (de-chunked) and trailers.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<String>,
    body: String,
    trailers: Vec<String>,
}

fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<String>) {
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.trim_end().split_once(':').unwrap_or((&h, ""));
        let name = name.to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "date" => {}
            "content-length" => headers.push("content-length".to_string()),
            _ => headers.push(format!("{name}: {value}")),
        }
    }
    headers.sort();
    (code, headers)
}

/// A chunked body and its trailers.
fn read_chunked(r: &mut BufReader<TcpStream>) -> (Vec<u8>, Vec<String>) {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).expect("chunk");
        body.extend_from_slice(&chunk[..n]);
    }
    let mut trailers = Vec::new();
    loop {
        let mut t = String::new();
        if r.read_line(&mut t).unwrap_or(0) == 0 || t == "\r\n" {
            break;
        }
        trailers.push(t.trim_end().to_ascii_lowercase());
    }
    (body, trailers)
}

/// Sends `request` (written whole) to `addr` and reads one answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).expect("request written");
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    if headers.iter().any(|h| h == "transfer-encoding: chunked") {
        (body, trailers) = read_chunked(&mut r);
    } else {
        // Asked with `Connection: close`: the body ends with the socket.
        let _ = r.read_to_end(&mut body);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        trailers,
    }
}

/// A request with `Connection: close` (so an answer's body ends with the
/// connection), the given extra header lines and body.
fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    req.into_bytes()
}

fn both_raw(
    etcd: &ServerProcess,
    ferrokv: &ServerProcess,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &str,
) -> [Answer; 2] {
    [etcd, ferrokv].map(|s| {
        let mut a = exchange(
            s.client_addr(),
            &raw_request(s.client_addr(), method, target, headers, body),
        );
        a.body = Normalizer::for_server(s).normalize(&a.body);
        // Go answers `Connection: close` to a request that asked for it;
        // hyper closes without saying so.
        a.headers.retain(|h| h != "connection: close");
        // hyper sends HTTP/1.1 trailers only to a client that accepts
        // them (docs/gateway.md); Go to any.
        if !headers.contains(&"TE: trailers") {
            a.trailers.clear();
        }
        a
    })
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded";

/// Go's mux (path decoding, 301 to clean paths), grpc-gateway's method
/// override, `Grpc-Timeout` and `Grpc-Metadata-*`, and the headers and
/// trailers of answers (error answers announce `Grpc-Trailer-Content-Type`
/// and send it after the chunked body; long answers are chunked), all
/// compared with etcd header by header.
#[test]
fn mux_override_timeouts_and_headers_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    let put = r#"{"key":"Zm9v","value":"YmFy"}"#;
    let range = r#"{"key":"Zm9v"}"#;
    let big = format!(r#"{{"key":"Ymln","value":"{}"}}"#, "A".repeat(2400));
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/v3/kv/put", vec![FORM], put),
        ("POST", "/v3/kv/put", vec![FORM], &big),
        // long answers are chunked, short ones have a length
        ("POST", "/v3/kv/range", vec![FORM], r#"{"key":"Ymln"}"#),
        ("POST", "/v3/kv/range", vec![FORM], range),
        // Go's mux: decoded paths, 301 to the clean path (a body for GET)
        ("POST", "/v3/kv/%72ange", vec![FORM], range),
        ("GET", "/v3/kv/%72ange", vec![], ""),
        ("POST", "/v3//kv/put", vec![FORM], put),
        ("POST", "/v3/kv/../kv/put", vec![FORM], put),
        ("POST", "/v3/kv/put/.", vec![FORM], put),
        ("POST", "/v3/./kv/put", vec![FORM], put),
        ("POST", "/v3/kv/put/", vec![FORM], put),
        ("POST", "/v3", vec![FORM], put),
        ("POST", "/v3beta//kv/put", vec![FORM], put),
        ("POST", "//health", vec![], ""),
        ("GET", "/health/../version", vec![], ""),
        ("GET", "/v3/kv/..?x=1&y='", vec![], ""),
        ("HEAD", "/v3//kv/range", vec![], ""),
        ("POST", "/v3/kv/a%20b/..", vec![FORM], put),
        ("POST", "/v3/%C3%A9/./", vec![FORM], put),
        ("POST", "/v3/%2e%2e/x", vec![FORM], put),
        ("POST", "/v3/kv/range%2F..", vec![FORM], put),
        ("OPTIONS", "/v3//kv/put", vec![], ""),
        // X-HTTP-Method-Override: only with a form's content type; the
        // form parse reads a POST body, so the call gets an empty request
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "X-HTTP-Method-Override: GET"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "X-HTTP-Method-Override: post"],
            range,
        ),
        (
            "POST",
            "/v3/kv/put",
            vec![FORM, "X-HTTP-Method-Override: POST"],
            put,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "X-HTTP-Method-Override: PUT"],
            range,
        ),
        (
            "POST",
            "/v3/kv/nothing",
            vec![FORM, "X-HTTP-Method-Override: GET"],
            range,
        ),
        (
            "POST",
            "/v3/kv/:x",
            vec![FORM, "X-HTTP-Method-Override: GET?"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![
                "Content-Type: application/json",
                "X-HTTP-Method-Override: GET",
            ],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec!["X-HTTP-Method-Override: GET"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range?a=%zz",
            vec![FORM, "X-HTTP-Method-Override: GET"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range?a=1;b=2",
            vec![FORM, "X-HTTP-Method-Override: GET"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "X-HTTP-Method-Override: POST"],
            r#"{"key":"%zz"}"#,
        ),
        (
            "POST",
            "/v3/kv/range?a=%zz",
            vec![FORM, "X-HTTP-Method-Override: PATCH"],
            "x;y",
        ),
        // Grpc-Timeout: grpc-gateway's parse, the deadline of the call
        ("POST", "/v3/kv/range", vec![FORM, "Grpc-Timeout: x"], range),
        ("POST", "/v3/kv/range", vec![FORM, "Grpc-Timeout: 5"], range),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: 5X"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: 1.5S"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: 1n"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: -1S"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: 99999999999H"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: 0S"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Timeout: +10S"],
            range,
        ),
        // an expired deadline sends nothing: the put is not made
        (
            "POST",
            "/v3/kv/put",
            vec![FORM, "Grpc-Timeout: -1S"],
            r#"{"key":"ZXhw","value":"MQ=="}"#,
        ),
        ("POST", "/v3/kv/range", vec![FORM], r#"{"key":"ZXhw"}"#),
        ("POST", "/v3/kv/put", vec![FORM, "Grpc-Timeout: x"], "{"),
        ("POST", "/v3/kv/put", vec![FORM, "Grpc-Timeout: -1S"], "{"),
        // past the first response: the stream's error chunk
        (
            "POST",
            "/v3/watch",
            vec![FORM, "Grpc-Timeout: 1S"],
            r#"{"create_request":{"key":"YQ=="}}"#,
        ),
        // Grpc-Metadata-*: -Bin values are base64 (padded or not)
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Foo-Bin: abc$"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Foo-Bin: YWJjZ"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Foo-Bin: YWI"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Other: x"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Token: nope.1"],
            range,
        ),
        (
            "POST",
            "/v3/kv/range",
            vec![FORM, "Grpc-Metadata-Authorization: nope.1"],
            range,
        ),
        // an empty token is a token, and not a valid one
        ("POST", "/v3/kv/range", vec![FORM, "Authorization:"], range),
        // only the metadata header's prefix counts, not a bare `Token`
        ("POST", "/v3/kv/range", vec![FORM, "Token: nope.1"], range),
        // error answers: the call's have the trailer, the gateway's not
        ("POST", "/v3/kv/range", vec![FORM, "TE: trailers"], "{}"),
        ("POST", "/v3/kv/range", vec![FORM], "{}"),
        (
            "POST",
            "/v3/kv/compaction",
            vec![FORM, "TE: trailers"],
            r#"{"revision":"100"}"#,
        ),
        (
            "POST",
            "/v3/lease/timetolive",
            vec![FORM, "TE: trailers"],
            r#"{"ID":"5"}"#,
        ),
        (
            "POST",
            "/v3/kv/put",
            vec![FORM, "TE: trailers"],
            r#"{"key":x}"#,
        ),
        (
            "POST",
            "/v3/lease/keepalive",
            vec![FORM, "TE: trailers"],
            "x",
        ),
        (
            "POST",
            "/v3/lease/keepalive",
            vec![FORM, "TE: trailers"],
            "",
        ),
        ("POST", "/v3/kv/nothing", vec![FORM, "TE: trailers"], "{}"),
        // a stream whose call fails before its first response: the chunk
        (
            "POST",
            "/v3/maintenance/snapshot",
            vec![FORM, "TE: trailers", "Authorization: bad.1"],
            "{}",
        ),
    ];
    for (method, target, headers, body) in &cases {
        let [mut want, got] = both_raw(&etcd, &ferrokv, method, target, headers, body);
        // A deadline that passes while a stream waits: grpc-go's Recv
        // returns the status (DeadlineExceeded) or, now and then, the
        // context's own error, which grpc-gateway makes Unknown. ferrokv
        // always answers the status.
        want.body = want.body.replace(
            r#"{"error":{"grpc_code":2,"http_code":500,"message":"context deadline exceeded","http_status":"Internal Server Error"}}"#,
            r#"{"error":{"grpc_code":4,"http_code":504,"message":"context deadline exceeded","http_status":"Gateway Timeout"}}"#,
        );
        assert_eq!(got, want, "{method} {target} {headers:?} {body}");
    }
    // A stream whose deadline passes before its first response (no
    // leader to observe): ferrokv answers the unary 504; etcd that or,
    // now and then (grpc-go's Header() races the context), the stream's
    // error chunk with status 500 or 504.
    let [want, got] = both_raw(
        &etcd,
        &ferrokv,
        "POST",
        "/v3/election/observe",
        &[FORM, "Grpc-Timeout: 1S"],
        r#"{"name":"bm8="}"#,
    );
    let unary =
        r#"{"error":"context deadline exceeded","message":"context deadline exceeded","code":4}"#;
    assert_eq!((got.status, got.body.as_str()), (504, unary), "{got:?}");
    assert!(
        want == got
            || (want.body.starts_with(r#"{"error":{"grpc_code":"#)
                && want.body.contains("context deadline exceeded")),
        "etcd: {want:?}"
    );

    // A watch with a deadline whose client goes before it: the watcher
    // is released then (ferrokv).
    {
        let addr = ferrokv.client_addr();
        let body = r#"{"create_request":{"key":"YQ=="}}"#;
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(&raw_request(
            addr,
            "POST",
            "/v3/watch",
            &["Grpc-Timeout: 1H"],
            body,
        ))
        .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while !line.contains("\"created\":true") {
            line.clear();
            assert!(r.read_line(&mut line).unwrap_or(0) > 0, "watch created");
        }
    }
    wait_no_watchers(&ferrokv, "a watch with a deadline outlived its client");
    // A path that does not decode: Go's server refuses it before etcd's
    // handlers (no CORS headers).
    let [want, got] = both_raw(&etcd, &ferrokv, "POST", "/v3/kv/%zz", &[], "{}");
    assert_eq!((got.status, &got.body), (want.status, &want.body));
    assert_eq!((want.status, want.body.as_str()), (400, "400 Bad Request"));
    assert!(
        !got.headers.iter().any(|h| h.starts_with("access-control")),
        "{got:?}"
    );
    // Over the gRPC limit, as the call's answer (with the trailer); on a
    // stream, as its error chunk.
    let huge = format!(
        r#"{{"key":"YQ==","value":"{}"}}"#,
        "A".repeat(2100 * 1024 / 3 * 4)
    );
    let watch_huge = format!(
        r#"{{"create_request":{{"key":"{}"}}}}"#,
        "A".repeat(2100 * 1024 / 3 * 4)
    );
    for (path, body) in [("/v3/kv/put", &huge), ("/v3/watch", &watch_huge)] {
        let [want, got] = both_raw(&etcd, &ferrokv, "POST", path, &[FORM, "TE: trailers"], body);
        assert_eq!(got, want, "{path}");
    }
}

/// A WebSocket client of the gateway (masked frames, as a client sends).
struct Ws {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A handshake on `target`: the answer's status line and headers (and
/// body when it refused), and the socket when it switched.
fn ws_connect(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
) -> (String, Option<Ws>) {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    writer.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let (status, head) = read_head(&mut reader);
    let mut shown = format!("{status} {head:?}");
    if status != 101 {
        let mut body = String::new();
        if head.iter().any(|h| h == "content-length") {
            // The refusals are short: one read gets them.
            let mut buf = [0u8; 512];
            if let Ok(n) = reader.read(&mut buf) {
                body = String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        shown.push_str(&format!(" {body:?}"));
        return (shown, None);
    }
    (shown, Some(Ws { reader, writer }))
}

impl Ws {
    fn frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut out = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if masked {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        let _ = self.writer.write_all(&out);
    }

    fn text(&mut self, s: &str) {
        self.frame(0x81, s.as_bytes(), true);
    }

    /// The next frame, shown: `text ...`, `close CODE TEXT`, `pong ...`,
    /// or `eof` when the server closed the connection.
    fn recv(&mut self) -> String {
        let mut head = [0u8; 2];
        if self.reader.read_exact(&mut head).is_err() {
            return "eof".into();
        }
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            self.reader.read_exact(&mut b).unwrap();
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.reader.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b);
        }
        assert_eq!(head[1] & 0x80, 0, "a server's frames are not masked");
        let mut payload = vec![0; len as usize];
        self.reader.read_exact(&mut payload).unwrap();
        let fin = if head[0] & 0x80 != 0 {
            ""
        } else {
            " (not final)"
        };
        match head[0] & 0x0f {
            1 => format!("text{fin} {}", String::from_utf8_lossy(&payload)),
            8 if payload.len() >= 2 => format!(
                "close {} {}",
                u16::from_be_bytes([payload[0], payload[1]]),
                String::from_utf8_lossy(&payload[2..])
            ),
            8 => "close".into(),
            10 => format!("pong {}", String::from_utf8_lossy(&payload)),
            op => format!("opcode {op}"),
        }
    }
}

/// grpc-websocket-proxy in front of etcd's gateway: a handshake on any
/// `/v3/` path, request messages in, one message per answer line out
/// (watch, keep-alive, unary calls, errors, unknown paths), pings, close
/// and protocol errors as gorilla/websocket answers them, handshakes it
/// refuses, and the subprotocol and cookie that become `Authorization`.
#[test]
fn websockets_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, ferrokv) = start_both(dir.path());
    let ws_headers = [
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut h = ws_headers.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let mut transcripts = Vec::new();
    for s in [&*etcd, &*ferrokv] {
        let n = Normalizer::for_server(s);
        let mut got: Vec<String> = Vec::new();
        let post = |path: &str, body: &str| curl(&url(s, path), body.as_bytes(), &[]);
        let open = |target: &str, extra: &[&'static str], got: &mut Vec<String>| {
            let (head, ws) = ws_connect(s.client_addr(), "GET", target, &with(extra));
            got.push(format!("{target}: {head}"));
            ws
        };
        let recv = |ws: &mut Ws| n.normalize(&ws.recv());

        // A watch: created, an event, a ping, a cancel, the close echoed.
        let mut ws = open("/v3/watch", &[], &mut got).expect("switched");
        ws.text(r#"{"create_request":{"key":"d3M=","prev_kv":true}}"#);
        got.push(recv(&mut ws));
        assert_eq!(
            post("/v3/kv/put", r#"{"key":"d3M=","value":"MQ=="}"#).0,
            200
        );
        got.push(recv(&mut ws));
        ws.frame(0x89, b"hi", true);
        got.push(recv(&mut ws));
        ws.text(r#"{"cancel_request":{"watch_id":"0"}}"#);
        got.push(recv(&mut ws));
        ws.frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'], true);
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));

        // A watch whose client goes without a close frame.
        let mut ws = open("/v3/watch", &[], &mut got).expect("switched");
        ws.text(r#"{"create_request":{"key":"d3M="}}"#);
        got.push(recv(&mut ws));
        drop(ws);

        // Keep-alive: one message per request; two requests in one
        // message, and one split over two frames.
        assert_eq!(post("/v3/lease/grant", r#"{"TTL":"60","ID":"11"}"#).0, 200);
        let mut ws = open("/v3beta/lease/keepalive", &[], &mut got).expect("switched");
        ws.text(r#"{"ID":"11"} {"ID":"12"}"#);
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));
        ws.frame(0x01, br#"{"ID":"#, true);
        ws.frame(0x80, br#""11"}"#, true);
        got.push(recv(&mut ws));
        drop(ws);

        // Unary calls: the answer, then the connection closes (no close
        // frame); an error answer's body the same way.
        let mut ws = open("/v3/kv/range", &[], &mut got).expect("switched");
        ws.text(r#"{"key":"d3M="}"#);
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));
        let mut ws = open("/v3/kv/put", &[], &mut got).expect("switched");
        ws.text(r#"{"key":1}"#);
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));
        // A stream's first request that does not decode.
        let mut ws = open("/v3/watch", &[], &mut got).expect("switched");
        ws.text("{bad");
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));
        // An unknown path: the gateway's 404 text, at once.
        let mut ws = open("/v3/kv/nothing", &[], &mut got).expect("switched");
        got.push(recv(&mut ws));
        got.push(recv(&mut ws));

        // A subprotocol that is not `Bearer, TOKEN` makes an empty token;
        // `Bearer, T` and the `token` cookie make `Bearer T`: both refused.
        for extra in [
            &["Sec-WebSocket-Protocol: chat"][..],
            &["Sec-WebSocket-Protocol: Bearer, nope.1"],
            &["Cookie: a=1; token=nope.1"],
            // metadata headers are not forwarded by the proxy
            &["Grpc-Metadata-Token: nope.1", "Grpc-Timeout: 1n"],
        ] {
            let mut ws = open("/v3/kv/range", extra, &mut got).expect("switched");
            ws.text(r#"{"key":"d3M="}"#);
            got.push(recv(&mut ws));
            got.push(recv(&mut ws));
        }

        // Protocol errors: gorilla's close code and words.
        for (first, payload, masked) in [
            (0x81u8, &b"{}"[..], false),
            (0xc1, b"{}", true),
            (0x83, b"{}", true),
            (0x09, b"", true),
            (0x80, b"{}", true),
            (0x88, &[0x03, 0xed][..], true),
            (0x88, b"", true),
            (0x89, &[b'p'; 126][..], true),
        ] {
            let mut ws = open("/v3/watch", &[], &mut got).expect("switched");
            ws.frame(first, payload, masked);
            got.push(recv(&mut ws));
            got.push(recv(&mut ws));
        }

        // Handshakes gorilla refuses, and Go's mux before it.
        for (method, target, headers) in [
            ("POST", "/v3/watch", &ws_headers[..]),
            ("GET", "/v3/watch", &ws_headers[..1]),
            (
                "GET",
                "/v3/watch",
                &["Sec-WebSocket-Version: 8", ws_headers[1]][..],
            ),
            ("GET", "/v3//watch", &ws_headers[..]),
        ] {
            let (head, _) = ws_connect(s.client_addr(), method, target, headers);
            got.push(format!("{method} {target}: {head}"));
        }
        transcripts.push(got);
    }
    for (want, got) in transcripts[0].iter().zip(&transcripts[1]) {
        assert_eq!(got, want);
    }
    assert_eq!(transcripts[1].len(), transcripts[0].len());
    // What etcd answered, as the docs say it: a unary call's answer and
    // then the socket closed, the close echoed with its code only, and
    // gorilla 1.5's words for a protocol error.
    for line in [
        "eof",
        "close 1000 ",
        "pong hi",
        "text Not Found",
        "close 1002 bad MASK",
    ] {
        assert!(transcripts[0].iter().any(|l| l == line), "etcd: {line}");
    }
    // The watchers of the closed WebSockets are gone on ferrokv.
    wait_no_watchers(&ferrokv, "watchers left after the WebSocket closed");
}

/// `Grpc-Metadata-Hasleader: true` (clientv3's `WithRequireLeader`,
/// metadata `hasleader`, on the gRPC port too): a member that has lost its
/// leader refuses such a call with `etcdserver: no leader` (503), unary or
/// stream, and serves the same serializable read without it.
#[test]
fn a_member_without_a_leader_refuses_calls_that_require_one() {
    use ferrokv_tests::cluster::{poll, sides, wait_leader, LEADER_WAIT_MAX};
    use ferrokv_tests::server::{ClusterOptions, EtcdCluster, FerrokvCluster};

    let dir = tempfile::tempdir().unwrap();
    let names = ["hl0", "hl1", "hl2"];
    let fast = vec![
        "--heartbeat-interval=50".to_string(),
        "--election-timeout=500".to_string(),
    ];
    let range = r#"{"key":"Zm9v","serializable":true}"#;
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "/v3/kv/range",
            &[FORM, "TE: trailers", "Grpc-Metadata-Hasleader: true"],
            range,
        ),
        ("/v3/kv/range", &[FORM], range),
        (
            "/v3/kv/range",
            &[FORM, "Grpc-Metadata-Hasleader: false"],
            range,
        ),
        (
            "/v3/maintenance/status",
            &[FORM, "Grpc-Metadata-Hasleader: true"],
            "{}",
        ),
        (
            "/v3/watch",
            &[FORM, "Grpc-Metadata-Hasleader: true"],
            r#"{"create_request":{"key":"Zm9v"}}"#,
        ),
    ];
    let mut answers = Vec::new();
    for (i, kind) in sides().into_iter().enumerate() {
        let d = dir.path().join(format!("{i}-{kind}"));
        let opts = |shards| ClusterOptions {
            shards,
            extra_args: fast.clone(),
        };
        let c = match kind {
            ServerKind::Etcd => EtcdCluster::start_with(&d, &names, "hl", opts(None)).into_inner(),
            ServerKind::Ferrokv => {
                FerrokvCluster::start(&d, &names, "hl", opts(Some(2))).into_inner()
            }
        };
        wait_leader(&c, &[0, 1, 2], LEADER_WAIT_MAX);
        let m = &c.members[0];
        let ok = curl(
            &url(m, "/v3/kv/put"),
            br#"{"key":"Zm9v","value":"YmFy"}"#,
            &[],
        );
        assert_eq!(ok.0, 200, "{kind}: {ok:?}");
        // With a leader, the header changes nothing.
        let [with_leader] = [m].map(|s| {
            exchange(
                s.client_addr(),
                &raw_request(
                    s.client_addr(),
                    "POST",
                    "/v3/kv/range",
                    &[FORM, "Grpc-Metadata-Hasleader: true"],
                    range,
                ),
            )
            .status
        });
        assert_eq!(with_leader, 200, "{kind}");
        // A watch that requires a leader, open when the leader goes: it
        // ends with `no leader` once none is found for a while.
        let addr = m.client_addr();
        let mut watch = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        watch
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let watch_req = raw_request(
            addr,
            "POST",
            "/v3/watch",
            &[FORM, "Grpc-Metadata-Hasleader: true"],
            r#"{"create_request":{"key":"Zm9v"}}"#,
        );
        watch.write_all(&watch_req).unwrap();
        let mut watch = BufReader::new(watch);
        let (watch_status, _) = read_head(&mut watch);
        c.members[1].sigstop();
        c.members[2].sigstop();
        // A follower calls an election, a leader steps down (check-quorum).
        let lost = poll(Duration::from_secs(20), || {
            let (_, metrics) = ferrokv_tests::http_get(m.client_addr(), "/metrics");
            metrics.contains("etcd_server_has_leader 0").then_some(())
        });
        let got: Vec<Answer> = cases
            .iter()
            .map(|(path, headers, body)| {
                let mut a = exchange(
                    m.client_addr(),
                    &raw_request(m.client_addr(), "POST", path, headers, body),
                );
                a.body = Normalizer::for_server(m).normalize(&a.body);
                a.headers.retain(|h| h != "connection: close");
                if !headers.contains(&"TE: trailers") {
                    a.trailers.clear();
                }
                a
            })
            .collect();
        let (watched, _) = read_chunked(&mut watch);
        let watched = Normalizer::for_server(m).normalize(&String::from_utf8_lossy(&watched));
        c.members[1].sigcont();
        c.members[2].sigcont();
        let mut got = got;
        got.push(Answer {
            status: watch_status,
            headers: Vec::new(),
            body: watched,
            trailers: Vec::new(),
        });
        assert!(
            lost.is_some(),
            "{kind}: member 0 kept a leader with the others stopped"
        );
        answers.push(got);
    }
    for (want, got) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(got, want);
    }
    assert_eq!(answers[0][0].status, 503, "etcd: {:?}", answers[0][0]);
    let no_leader = r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
    assert!(
        answers[0][5].body.ends_with(no_leader),
        "etcd: {:?}",
        answers[0][5]
    );
}

/// The WebSocket gateway over TLS (`wss://`, HTTP/1.1 by ALPN, a client
/// certificate): python's own `ssl` and a hand-written WebSocket client
/// (`tests/python/wss_transcript.py`) open a watch, put its key over
/// https, ping and close; etcd's and ferrokv's answers, normalized, are the
/// same.
#[test]
fn websockets_over_tls_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, etcd, ferrokv) = start_both_tls(dir.path());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/wss_transcript.py");
    let mut transcripts = Vec::new();
    for s in [&*etcd, &*ferrokv] {
        let addr = s.client_addr();
        let out = ferrokv_tests::etcdctl::tool(
            std::path::Path::new("python3"),
            &[
                script.display().to_string(),
                addr.ip().to_string(),
                addr.port().to_string(),
                tls.ca.display().to_string(),
                tls.cert.display().to_string(),
                tls.key.display().to_string(),
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 0, "{}: {out:?}", s.kind());
        // The one known difference (docs/gateway.md): offered only
        // http/1.1, Go's server picks no protocol and ferrokv http/1.1.
        let (alpn, rest) = out.stdout.split_once('\n').unwrap_or_default();
        assert!(
            ["alpn None", "alpn http/1.1"].contains(&alpn),
            "{}: {alpn}",
            s.kind()
        );
        transcripts.push(Normalizer::for_server(s).normalize(rest));
    }
    assert!(
        transcripts[0].contains("handshake HTTP/1.1 101") && transcripts[0].contains("event text"),
        "etcd's transcript: {}",
        transcripts[0]
    );
    assert_eq!(transcripts[1], transcripts[0], "ferrokv, then etcd");
}

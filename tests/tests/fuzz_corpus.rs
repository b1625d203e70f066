//! The fuzz targets of `fuzz/` (docs/fuzzing.md) on stable Rust: every
//! file of every corpus (`fuzz/corpus/<target>/`) and every crash
//! reproducer (`fuzz/regressions/<target>/`) goes through the same
//! function its target runs, and none may panic: damaged input is refused
//! with an error. So a decoder change that brings back a crash found once
//! fails CI, without nightly or libFuzzer.
//!
//! The `seed-*` files of each corpus are made here from the real encoders
//! (and, for the bbolt target, by the real etcd when it is installed):
//!
//! ```text
//! cargo test -p ferrokv-tests --test fuzz_corpus -- --ignored generate_seeds
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Target name (its `fuzz/fuzz_targets/<name>.rs`) and what it runs.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("backup", ferrokv_shards::backup::fuzzing::parse),
    ("bolt", ferrokv_ctl::bolt::fuzzing::read),
    ("gateway", ferrokv_wire::fuzzing::gateway),
    ("grpc", ferrokv_wire::fuzzing::grpc),
    ("http_connection", ferrokv_wire::fuzzing::connection),
    ("mvcc_snapshot", ferrokv_mvcc::fuzzing::snapshot),
    ("peer_frames", ferrokv_raft::peer::fuzzing::frames),
    ("peer_payload", ferrokv_raft::peer::fuzzing::payload),
    ("raft_record", ferrokv_raft::fuzzing::wal_record),
    ("shard_record", ferrokv_shards::record::fuzzing::decode),
    ("snapshot_status", |data| {
        let _ = ferrokv_ctl::snapshot_file::status(data);
    }),
    ("wal_frame", ferrokv_wal::fuzzing::frame),
    ("wal_segment", ferrokv_wal::fuzzing::segment),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seeds");
        let regressions = files_in(&fuzz_dir().join("regressions").join(name));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("corpus files are readable");
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(failed.is_empty(), "panicked on {failed:#?}");
    println!("{replayed} inputs replayed over {} targets", TARGETS.len());
}

/// A target added to `fuzz/` without a line here would go unreplayed.
#[test]
fn every_fuzz_target_is_replayed_here() {
    let mut on_disk: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let mut here: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    here.sort();
    assert_eq!(on_disk, here);
}

#[test]
#[ignore = "writes the seed files of fuzz/corpus; run by hand"]
fn generate_seeds() {
    for (name, seeds) in seeds::all() {
        let dir = fuzz_dir().join("corpus").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for old in files_in(&dir) {
            let is_seed = old
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if is_seed {
                std::fs::remove_file(old).unwrap();
            }
        }
        for (what, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{what}")), bytes).unwrap();
        }
    }
}

mod seeds {
    use ferrokv_mvcc::{Store, WriteOp};
    use ferrokv_shards::backup;
    use ferrokv_shards::record::{Part, Record};
    use ferrokv_wire::grpc::encode_frame;
    use ferrokv_wire::pb::etcdserverpb as pb;

    pub type Seeds = Vec<(String, Vec<u8>)>;

    pub fn all() -> Vec<(&'static str, Seeds)> {
        let snapshot = shard_snapshot();
        let backup_file = backup_file(&snapshot);
        let etcd_db = etcd_snapshot();
        let mut status = vec![("ferrokv-backup".to_string(), backup_file.clone())];
        status.extend(etcd_db.clone());
        vec![
            ("wal_frame", wal_frames()),
            ("wal_segment", wal_segments()),
            (
                "raft_record",
                numbered(ferrokv_raft::fuzzing::seed_wal_records()),
            ),
            ("shard_record", shard_records()),
            (
                "peer_frames",
                numbered(ferrokv_raft::peer::fuzzing::seed_frames()),
            ),
            (
                "peer_payload",
                numbered(ferrokv_raft::peer::fuzzing::seed_payloads()),
            ),
            (
                "mvcc_snapshot",
                vec![
                    ("file".into(), [&[0u8][..], &snapshot].concat()),
                    ("body".into(), [&[1u8][..], &snapshot[64..]].concat()),
                ],
            ),
            (
                "backup",
                vec![
                    ("checked".into(), [&[0u8][..], &backup_file].concat()),
                    (
                        "skip-hash-check".into(),
                        [&[1u8][..], &backup_file].concat(),
                    ),
                ],
            ),
            ("bolt", etcd_db),
            ("snapshot_status", status),
            ("grpc", grpc_bodies()),
            ("gateway", gateway_bodies()),
            ("http_connection", http_connections()),
        ]
    }

    fn numbered(v: Vec<Vec<u8>>) -> Seeds {
        v.into_iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect()
    }

    fn wal_frames() -> Seeds {
        use ferrokv_wal::frame::encode;
        let three = [encode(1, b"one"), encode(2, b""), encode(3, b"three")].concat();
        let mut padded = encode(7, b"padded");
        padded.resize(512, 0);
        vec![
            ("one".into(), encode(1, b"hello")),
            ("three".into(), three),
            ("padded".into(), padded),
        ]
    }

    /// The fuzzing prefix (flags, first lsn) then a segment.
    fn wal_segments() -> Seeds {
        use ferrokv_wal::frame::encode;
        let segment = |first: u64, n: u64| -> Vec<u8> {
            (first..first + n)
                .flat_map(|lsn| encode(lsn, format!("payload-{lsn}").as_bytes()))
                .collect()
        };
        let prefixed = |last: bool, first: u64, body: &[u8]| {
            let mut v = vec![u8::from(last)];
            v.extend_from_slice(&first.to_le_bytes());
            v.extend_from_slice(body);
            v
        };
        let mut clean = segment(5, 4);
        clean.resize(clean.len() + 200, 0);
        let full = segment(1, 4);
        let mut torn = full[..full.len() - 7].to_vec();
        torn.resize(torn.len() + 64, 0);
        vec![
            ("clean".into(), prefixed(false, 5, &clean)),
            ("torn-tail".into(), prefixed(true, 1, &torn)),
        ]
    }

    fn shard_records() -> Seeds {
        let write = Record::Write {
            rev: 9,
            parts: vec![
                Part {
                    shard: 0,
                    first_sub: 0,
                    ops: vec![
                        WriteOp::Put {
                            key: b"k".to_vec(),
                            value: b"v".to_vec(),
                            lease: 0x22,
                        },
                        WriteOp::Delete { key: b"d".to_vec() },
                    ],
                },
                Part {
                    shard: 1,
                    first_sub: 2,
                    ops: vec![WriteOp::Put {
                        key: b"other".to_vec(),
                        value: b"shard".to_vec(),
                        lease: 0,
                    }],
                },
            ],
        };
        let records = [
            ("write", write),
            ("compact", Record::Compact { rev: 5, at: 7 }),
            ("truncate", Record::TruncateAbove { rev: 4 }),
            (
                "marker",
                Record::Marker {
                    id: 3,
                    cut: 7,
                    through: 9,
                },
            ),
            ("lease-grant", Record::LeaseGrant { id: 0x22, ttl: 60 }),
            ("lease-revoke", Record::LeaseRevoke { id: 0x22, rev: 10 }),
        ];
        let mut out: Vec<(String, Vec<u8>)> = records
            .into_iter()
            .map(|(n, r)| (n.to_string(), r.encode()))
            .collect();
        // As versions before the compaction threshold wrote it.
        let mut v1 = vec![2u8];
        v1.extend_from_slice(&5i64.to_le_bytes());
        out.push(("compact-v1".to_string(), v1));
        out
    }

    /// A shard snapshot file with history, a tombstone, a lease, a
    /// compaction and lease meta, as `Store::write_snapshot` writes it.
    fn shard_snapshot() -> Vec<u8> {
        let put = |k: &str, v: &str, lease| WriteOp::Put {
            key: k.into(),
            value: v.into(),
            lease,
        };
        let mut s = Store::new();
        s.apply(2, &[put("a", "1", 0), put("b", "2", 0)]);
        s.apply(3, &[put("a", "3", 0)]);
        s.apply(4, &[WriteOp::Delete { key: "b".into() }]);
        s.apply(5, &[put("c", "4", 0x22)]);
        s.apply(6, &[put("a", "5", 0)]);
        s.compact(3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.rkyv");
        let meta = ferrokv_shards::shard::encode_lease_meta(&[(0x22, 60)]);
        s.write_snapshot(&path, 17, &meta).unwrap();
        std::fs::read(path).unwrap()
    }

    fn backup_file(part: &[u8]) -> Vec<u8> {
        let header = backup::Header {
            shards: 1,
            revision: 6,
            compact_revision: 3,
        };
        backup::assemble(&header, &[part.to_vec()])
    }

    /// `etcdctl snapshot save` of a real etcd holding a few revisions, a
    /// lease and a compaction; none when etcd is not installed.
    fn etcd_snapshot() -> Seeds {
        use std::process::{Command, Stdio};
        if !std::path::Path::new("/usr/bin/etcd").exists() {
            eprintln!("no /usr/bin/etcd: the bolt seeds are left as they are");
            return Vec::new();
        }
        let dir = tempfile::tempdir().unwrap();
        let client = "http://127.0.0.1:23917";
        let mut etcd = Command::new("/usr/bin/etcd")
            .args(["--data-dir", &dir.path().join("d").display().to_string()])
            .args([
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:23918"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:23918"])
            .args(["--initial-cluster", "default=http://127.0.0.1:23918"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ctl = |args: &[&str]| {
            let out = Command::new("etcdctl")
                .args(["--endpoints", client, "--dial-timeout", "10s"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        ctl(&["put", "a", "1"]);
        ctl(&["put", "b", "2"]);
        ctl(&["put", "a", "3"]);
        let lease = ctl(&["lease", "grant", "600"]);
        let id = lease.split_whitespace().nth(1).unwrap().to_string();
        ctl(&["put", "c", "4", &format!("--lease={id}")]);
        ctl(&["del", "b"]);
        ctl(&["compact", "3"]);
        let file = dir.path().join("snap.db");
        ctl(&["snapshot", "save", &file.display().to_string()]);
        etcd.kill().unwrap();
        etcd.wait().unwrap();
        vec![("etcd-snapshot".into(), std::fs::read(file).unwrap())]
    }

    /// The fuzzing prefix (path, chunk size) then JSON bodies as curl
    /// users and etcd3gw send them.
    fn gateway_bodies() -> Seeds {
        let seeds: &[(&str, &str, u8, &str)] = &[
            (
                "put",
                "/v3/kv/put",
                255,
                r#"{"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true}"#,
            ),
            (
                "range",
                "/v3/kv/range",
                3,
                r#"{"key":"AA==","range_end":"AA==","sort_order":"DESCEND","sortTarget":2,"limit":10}"#,
            ),
            (
                "txn",
                "/v3/kv/txn",
                16,
                r#"{"compare":[{"key":"YQ==","version":null,"target":"VERSION","result":"EQUAL"},{"key":"YQ==","value":"Yg==","target":"VALUE"}],"success":[{"request_put":{"key":"YQ==","value":""}},{"request_txn":{"success":[{"request_range":{"key":"YQ=="}}]}}],"failure":[{"request_delete_range":{"key":"YQ==","prev_kv":true}},{"request_put":null}]}"#,
            ),
            (
                "watch",
                "/v3/watch",
                7,
                r#"{"create_request":{"key":"dw==","start_revision":"1","filters":["NOPUT",1],"prev_kv":true}} {"progress_request":{}} {"cancel_request":{"watch_id":"0"}}"#,
            ),
            (
                "keepalive",
                "/v3/lease/keepalive",
                1,
                r#"{"ID":"8"}{"ID":8}x"#,
            ),
            (
                "member-add",
                "/v3/cluster/member/add",
                255,
                r#"{"peerURLs":["http://127.0.0.1:2380"],"isLearner":true}"#,
            ),
            (
                "role-grant",
                "/v3/auth/role/grant",
                255,
                r#"{"name":"r","perm":{"key":"YQ==","range_end":"Yg==","permType":"READWRITE"}}"#,
            ),
            (
                "lock",
                "/v3/lock/lock",
                255,
                r#"{"name":"bA==","lease":"1"}"#,
            ),
            (
                "bad",
                "/v3/kv/put",
                255,
                r#"{"key":[1,2,300],"lease":"12a","x":tru}"#,
            ),
            (
                "escapes",
                "/v3/kv/range",
                255,
                "{\"key\":\"Zm9v\\n\",\"k\\u00e9y\":\"\\ud83d\\ude00\",\"sort_order\":\"\\u0041\"}",
            ),
        ];
        seeds
            .iter()
            .map(|(what, path, chunk, body)| {
                let route = ferrokv_wire::fuzzing::gateway_route(path).unwrap();
                (
                    what.to_string(),
                    [&[route, *chunk][..], body.as_bytes()].concat(),
                )
            })
            .collect()
    }

    /// The fuzzing prefix (chunk size, method index) then gRPC frames.
    fn grpc_bodies() -> Seeds {
        use ferrokv_wire::fuzzing::METHODS;
        let at = |m: &str| METHODS.iter().position(|x| *x == m).unwrap() as u8;
        let put = pb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        };
        let range = pb::RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            limit: 10,
            revision: 3,
            ..Default::default()
        };
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Mod as i32,
                key: "k".into(),
                target_union: Some(pb::compare::TargetUnion::ModRevision(4)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put.clone())),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(range.clone())),
            }],
        };
        let watch = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: "k".into(),
                    start_revision: 2,
                    prev_kv: true,
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        };
        let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
        let seed = |method: &str, frames: Vec<bytes::Bytes>| {
            let mut v = vec![7, at(method)];
            for f in frames {
                v.extend_from_slice(&f);
            }
            v
        };
        vec![
            (
                "put".into(),
                seed("/etcdserverpb.KV/Put", vec![encode_frame(&put)]),
            ),
            (
                "range".into(),
                seed("/etcdserverpb.KV/Range", vec![encode_frame(&range)]),
            ),
            (
                "txn".into(),
                seed("/etcdserverpb.KV/Txn", vec![encode_frame(&txn)]),
            ),
            (
                "watch".into(),
                seed(
                    "/etcdserverpb.Watch/Watch",
                    vec![encode_frame(&watch), encode_frame(&watch)],
                ),
            ),
            (
                "lease-grant".into(),
                seed("/etcdserverpb.Lease/LeaseGrant", vec![encode_frame(&grant)]),
            ),
        ]
    }

    /// What h2's own client writes for a unary and a streaming gRPC call,
    /// and HTTP/1.1 requests as curl sends them.
    fn http_connections() -> Seeds {
        let put = pb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        };
        let watch = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: "k".into(),
                    ..Default::default()
                },
            )),
        };
        let json_put = r#"{"key":"Zm9v","value":"YmFy"}"#;
        vec![
            ("h2-put".into(), h2_client_bytes("/etcdserverpb.KV/Put", encode_frame(&put))),
            (
                "h2-watch".into(),
                h2_client_bytes("/etcdserverpb.Watch/Watch", encode_frame(&watch)),
            ),
            (
                "http1-health".into(),
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nUser-Agent: curl/8.14.1\r\nAccept: */*\r\n\r\n"
                    .to_vec(),
            ),
            ("http1-gateway-put".into(), http1_post("/v3/kv/put", json_put)),
        ]
    }

    fn http1_post(path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// The bytes h2's client sends for one gRPC call with `body`, captured
    /// from an in-memory pipe with nothing answering at the other end.
    fn h2_client_bytes(path: &str, body: bytes::Bytes) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, mut server) = tokio::io::duplex(1 << 20);
            let (send, conn) = h2::client::handshake(client).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut send = send.ready().await.unwrap();
            let req = http::Request::post(format!("http://127.0.0.1:2379{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (_resp, mut stream) = send.send_request(req, false).unwrap();
            stream.send_data(body, true).unwrap();
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), server.read(&mut buf))
                    .await
            {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        })
    }
}

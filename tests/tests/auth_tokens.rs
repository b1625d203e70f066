//! Auth tokens side by side with etcd 3.4.23: the same steps against an
//! etcd and a ferrokv given the same flags, and the same answers asked of
//! both.
//!
//! - `es512_jwt_tokens_as_etcd`: `--auth-token jwt,...,sign-method=ES512`
//!   (P-521 keys from `openssl ecparam -name secp521r1`): etcdctl
//!   `--user root:pw` puts and gets, a wrong password is refused, and a
//!   token one server signed is accepted by the other (JWTs are stateless:
//!   the same key pair and the same auth revision make them interchangeable),
//!   which pins the signature's encoding (JWS r || s) both ways.
//! - `etcdctl_user_from_the_environment_as_etcd`: `ETCDCTL_USER=root:pw`
//!   instead of `--user`, a wrong one, and one shadowed by `--user`.
//! - `expired_tokens_are_invalid_as_etcd`: with `--auth-token-ttl=2`
//!   (simple tokens) and `ttl=2s` (jwt), a raw gRPC call of each service
//!   with an expired token, with a made-up token and with none gets the
//!   same status code and message from both (`etcdserver: invalid auth
//!   token` for the first two), and a fresh token is served.
//!
//! Every server is stopped when its value drops, also when a test panics.

use std::path::Path;
use std::time::Duration;

use ferrokv_tests::etcdctl::{ctl_with_env, ETCDCTL_TIMEOUT};
use ferrokv_tests::grpc::{connect, try_unary_as, CALL_TIMEOUT};
use ferrokv_tests::{etcdctl, etcdctl_bin, EtcdProcess, FerrokvProcess, Output};
use ferrokv_tests::{ServerOptions, ServerProcess};
use ferrokv_wire::pb::etcdserverpb as pb;

/// etcd's simple-token TTL here (`--auth-token-ttl`, seconds) and the
/// jwt's (`ttl=`).
const TOKEN_TTL_SECS: u64 = 2;
/// Past the TTL: etcd's simple tokens are swept once a second, and a JWT's
/// `exp` is in whole seconds, valid through that second (Go's check).
const PAST_TTL: Duration = Duration::from_millis(TOKEN_TTL_SECS * 1000 + 2500);

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A P-521 key pair: (private, public) paths. `-noout`: etcd's Go
/// parser reads the first PEM block only, and refuses a file with
/// `EC PARAMETERS` first (`asn1: structure error`); ferrokv skips it.
fn p521_keys(dir: &Path) -> (String, String) {
    let private = dir.join("p521.pem").display().to_string();
    let public = dir.join("p521.pub").display().to_string();
    openssl(&[
        "ecparam",
        "-name",
        "secp521r1",
        "-genkey",
        "-noout",
        "-out",
        &private,
    ]);
    openssl(&["ec", "-in", &private, "-pubout", "-out", &public]);
    (private, public)
}

/// An etcd and a ferrokv with `args`.
fn both(dir: &Path, args: Vec<String>) -> (EtcdProcess, FerrokvProcess) {
    let opts = ServerOptions {
        extra_args: args,
        ..ServerOptions::default()
    };
    (
        EtcdProcess::start_with(&dir.join("etcd"), opts.clone()),
        FerrokvProcess::start_with(&dir.join("ferrokv"), opts),
    )
}

/// root (password `pw`) with the root role, and auth enabled.
fn enable_root(server: &ServerProcess) {
    for step in [
        &["user", "add", "root:pw"][..],
        &["user", "grant-role", "root", "root"][..],
        &["auth", "enable"][..],
    ] {
        let out = etcdctl(&server.endpoint(), step, None);
        assert_eq!(out.code, 0, "{}: {step:?}: {out:?}", server.kind());
    }
}

async fn authenticate(channel: &tonic::transport::Channel, password: &str) -> String {
    let r: Result<pb::AuthenticateResponse, tonic::Status> = try_unary_as(
        channel,
        "/etcdserverpb.Auth/Authenticate",
        pb::AuthenticateRequest {
            name: "root".into(),
            password: password.into(),
        },
        None,
        CALL_TIMEOUT,
    )
    .await
    .expect("Authenticate answered");
    r.expect("Authenticate").token
}

/// What a call answered, as the comparison sees it: `ok` or the status's
/// code and message.
fn answer<T>(r: Option<Result<T, tonic::Status>>) -> String {
    match r {
        None => "no answer".into(),
        Some(Ok(_)) => "ok".into(),
        Some(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// A Range of `key` as the token's user: its answer and the values read.
async fn range_as(
    channel: &tonic::transport::Channel,
    key: &str,
    token: Option<&str>,
) -> (String, Vec<Vec<u8>>) {
    let r: Option<Result<pb::RangeResponse, tonic::Status>> = try_unary_as(
        channel,
        "/etcdserverpb.KV/Range",
        pb::RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        },
        token,
        CALL_TIMEOUT,
    )
    .await;
    let values = match &r {
        Some(Ok(resp)) => resp.kvs.iter().map(|kv| kv.value.to_vec()).collect(),
        _ => Vec::new(),
    };
    (answer(r), values)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn es512_jwt_tokens_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = p521_keys(dir.path());
    let (etcd, ferrokv) = both(
        dir.path(),
        vec![format!(
            "--auth-token=jwt,pub-key={public},priv-key={private},sign-method=ES512,ttl=10m"
        )],
    );
    let norm = ferrokv_tests::Normalizer::new();
    let mut outputs: Vec<Vec<Output>> = Vec::new();
    for server in [&*etcd, &*ferrokv] {
        enable_root(server);
        let ep = server.endpoint();
        let steps: [&[&str]; 5] = [
            &["--user", "root:pw", "put", "es512", "signed"],
            &["--user", "root:pw", "get", "es512"],
            &["--user", "root:wrong", "get", "es512"],
            &["get", "es512"],
            &["--user", "root:pw", "auth", "status"],
        ];
        outputs.push(
            steps
                .iter()
                .map(|step| norm.normalize_output(&etcdctl(&ep, step, None)))
                .collect(),
        );
    }
    assert_eq!(outputs[1], outputs[0], "ferrokv vs etcd");
    assert_eq!(outputs[0][1].stdout, "es512\nsigned\n", "{:?}", outputs[0]);

    let rt = runtime();
    rt.block_on(async {
        let etcd_ch = connect(&etcd).await;
        let ferrokv_ch = connect(&ferrokv).await;
        let etcd_token = authenticate(&etcd_ch, "pw").await;
        let ferrokv_token = authenticate(&ferrokv_ch, "pw").await;
        for token in [&etcd_token, &ferrokv_token] {
            assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        }
        // Each server's own token, then the other's.
        for (channel, own, other) in [
            (&etcd_ch, &etcd_token, &ferrokv_token),
            (&ferrokv_ch, &ferrokv_token, &etcd_token),
        ] {
            for token in [own, other] {
                assert_eq!(
                    range_as(channel, "es512", Some(token)).await,
                    ("ok".to_string(), vec![b"signed".to_vec()]),
                    "token {token}"
                );
            }
        }
        // A signature cut short is refused by both.
        let cut = &etcd_token[..etcd_token.len() - 8];
        let (e, f) = (
            range_as(&etcd_ch, "es512", Some(cut)).await,
            range_as(&ferrokv_ch, "es512", Some(cut)).await,
        );
        assert_eq!(f, e);
        assert_eq!(e.0, "Unauthenticated: etcdserver: invalid auth token");
    });
}

#[test]
fn etcdctl_user_from_the_environment_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (etcd, ferrokv) = both(dir.path(), Vec::new());
    let norm = ferrokv_tests::Normalizer::new();
    let bin = etcdctl_bin();
    let mut outputs: Vec<Vec<Output>> = Vec::new();
    for server in [&*etcd, &*ferrokv] {
        enable_root(server);
        let ep = server.endpoint();
        let steps: [(&str, &[&str]); 6] = [
            ("root:pw", &["put", "env", "from-env"]),
            ("root:pw", &["get", "env"]),
            ("root:pw", &["user", "list"]),
            ("root:wrong", &["get", "env"]),
            ("nobody:pw", &["get", "env"]),
            // Both: etcdctl 3.4 refuses to run (pkg/flags: "conflicting
            // environment variable ... is shadowed").
            ("root:wrong", &["--user", "root:pw", "get", "env"]),
        ];
        outputs.push(
            steps
                .iter()
                .map(|(user, args)| {
                    let out =
                        ctl_with_env(&bin, &ep, args, &[("ETCDCTL_USER", user)], ETCDCTL_TIMEOUT);
                    let mut out = norm.normalize_output(&out);
                    out.stderr = without_capnslog_time(&out.stderr);
                    out
                })
                .collect(),
        );
    }
    assert_eq!(outputs[1], outputs[0], "ferrokv vs etcd");
    let etcd_out = &outputs[0];
    assert_eq!(
        (etcd_out[1].code, etcd_out[1].stdout.as_str()),
        (0, "env\nfrom-env\n")
    );
    assert!(
        etcd_out[3].stderr.contains("authentication failed"),
        "{:?}",
        etcd_out[3]
    );
    assert!(
        etcd_out[5].code == 1 && etcd_out[5].stderr.contains("is shadowed"),
        "{:?}",
        etcd_out[5]
    );
}

/// capnslog's `2026-12-02 22:09:31.953462 C | ` line prefix, its time
/// removed.
fn without_capnslog_time(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| {
            let b = l.as_bytes();
            let stamped = b.len() > 27
                && b[4] == b'-'
                && b[10] == b' '
                && b[19] == b'.'
                && l[..26]
                    .bytes()
                    .all(|c| c.is_ascii_digit() || b"-: .".contains(&c));
            format!("{}\n", if stamped { &l[27..] } else { l })
        })
        .collect()
}

/// Every call of the denial suite with `token`: (call, answer).
async fn denial_suite(channel: &tonic::transport::Channel, token: Option<&str>) -> Vec<String> {
    let key = || bytes::Bytes::from_static(b"denied");
    let mut out = Vec::new();
    macro_rules! call {
        ($path:literal, $resp:ty, $req:expr) => {{
            let r: Option<Result<$resp, tonic::Status>> =
                try_unary_as(channel, $path, $req, token, CALL_TIMEOUT).await;
            out.push(format!("{}: {}", $path, answer(r)));
        }};
    }
    call!(
        "/etcdserverpb.KV/Range",
        pb::RangeResponse,
        pb::RangeRequest {
            key: key(),
            ..Default::default()
        }
    );
    call!(
        "/etcdserverpb.KV/Put",
        pb::PutResponse,
        pb::PutRequest {
            key: key(),
            value: key(),
            ..Default::default()
        }
    );
    call!(
        "/etcdserverpb.KV/DeleteRange",
        pb::DeleteRangeResponse,
        pb::DeleteRangeRequest {
            key: key(),
            ..Default::default()
        }
    );
    call!(
        "/etcdserverpb.KV/Txn",
        pb::TxnResponse,
        pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: key(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }
    );
    call!(
        "/etcdserverpb.Lease/LeaseRevoke",
        pb::LeaseRevokeResponse,
        pb::LeaseRevokeRequest { id: 12345 }
    );
    call!(
        "/etcdserverpb.Lease/LeaseTimeToLive",
        pb::LeaseTimeToLiveResponse,
        pb::LeaseTimeToLiveRequest {
            id: 12345,
            keys: true
        }
    );
    call!(
        "/etcdserverpb.Lease/LeaseLeases",
        pb::LeaseLeasesResponse,
        pb::LeaseLeasesRequest {}
    );
    call!(
        "/etcdserverpb.Auth/UserList",
        pb::AuthUserListResponse,
        pb::AuthUserListRequest {}
    );
    call!(
        "/etcdserverpb.Auth/UserGet",
        pb::AuthUserGetResponse,
        pb::AuthUserGetRequest {
            name: "root".into()
        }
    );
    call!(
        "/etcdserverpb.Auth/RoleList",
        pb::AuthRoleListResponse,
        pb::AuthRoleListRequest {}
    );
    call!(
        "/etcdserverpb.Auth/UserAdd",
        pb::AuthUserAddResponse,
        pb::AuthUserAddRequest {
            name: "intruder".into(),
            password: "x".into(),
            ..Default::default()
        }
    );
    call!(
        "/etcdserverpb.Cluster/MemberList",
        pb::MemberListResponse,
        pb::MemberListRequest::default()
    );
    call!(
        "/etcdserverpb.Maintenance/Status",
        pb::StatusResponse,
        pb::StatusRequest {}
    );
    call!(
        "/etcdserverpb.Maintenance/Alarm",
        pb::AlarmResponse,
        pb::AlarmRequest::default()
    );
    call!(
        "/etcdserverpb.Maintenance/HashKV",
        pb::HashKvResponse,
        pb::HashKvRequest { revision: 0 }
    );
    call!(
        "/etcdserverpb.Auth/AuthDisable",
        pb::AuthDisableResponse,
        pb::AuthDisableRequest {}
    );
    out
}

/// [`expired_tokens_are_invalid_as_etcd`] with one kind of token.
fn expired_tokens_on(dir: &Path, args: Vec<String>, what: &str) {
    let (etcd, ferrokv) = both(dir, args);
    let rt = runtime();
    let mut suites = Vec::new();
    for server in [&*etcd, &*ferrokv] {
        enable_root(server);
        suites.push(rt.block_on(async {
            let channel = connect(server).await;
            let token = authenticate(&channel, "pw").await;
            let (fresh, _) = range_as(&channel, "denied", Some(&token)).await;
            assert_eq!(fresh, "ok", "{what} {}: a fresh token", server.kind());
            tokio::time::sleep(PAST_TTL).await;
            let mut rows = Vec::new();
            for (name, token) in [
                ("expired", Some(token.as_str())),
                ("made-up", Some("notatoken.1")),
                ("none", None),
            ] {
                for row in denial_suite(&channel, token).await {
                    rows.push(format!("{name} {row}"));
                }
            }
            // A fresh token is served again (and auth is still enabled:
            // no call above disabled it).
            let token = authenticate(&channel, "pw").await;
            let (fresh, _) = range_as(&channel, "denied", Some(&token)).await;
            rows.push(format!("fresh Range: {fresh}"));
            let (none, _) = range_as(&channel, "denied", None).await;
            rows.push(format!("none Range again: {none}"));
            rows
        }));
    }
    for (e, f) in suites[0].iter().zip(&suites[1]) {
        eprintln!("{what}: etcd {e}\n{what}: ferrokv {f}");
    }
    assert_eq!(suites[1], suites[0], "{what}: ferrokv vs etcd");
    let expired_range = &suites[0][0];
    assert!(
        expired_range.ends_with("Unauthenticated: etcdserver: invalid auth token"),
        "{what}: {expired_range}"
    );
}

#[test]
fn expired_tokens_are_invalid_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    expired_tokens_on(
        &dir.path().join("simple"),
        vec![format!("--auth-token-ttl={TOKEN_TTL_SECS}")],
        "simple",
    );
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let private = keys.join("rsa.pem").display().to_string();
    let public = keys.join("rsa.pub").display().to_string();
    openssl(&["genrsa", "-out", &private, "2048"]);
    openssl(&["rsa", "-in", &private, "-pubout", "-out", &public]);
    expired_tokens_on(
        &dir.path().join("jwt"),
        vec![format!(
            "--auth-token=jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl={TOKEN_TTL_SECS}s"
        )],
        "jwt",
    );
}

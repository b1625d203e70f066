//! etcdctl compatibility: every script in `testdata/compat/` is run against a
//! fresh real etcd and a fresh ferrokv; each step must print the same output
//! and exit with the same code (see `ferrokv_tests::script`).
//!
//! Each script runs twice: against ferrokv's default configuration and with
//! `--shards 4`, because sharding must not be visible to clients (one global
//! revision, atomic multi-key txn and ranges across shards, DESIGN.md 1.2).

use std::collections::BTreeSet;

use ferrokv_tests::script::compat_dir;

/// One test per script and shard count, so that nextest runs them in
/// parallel and a failure names its script.
macro_rules! compat_scripts {
    ($($test:ident => $file:literal,)*) => {
        mod default_shards {
            $(
                #[test]
                fn $test() {
                    ferrokv_tests::script::run_compat_file(
                        &ferrokv_tests::script::compat_dir().join($file),
                        None,
                    );
                }
            )*
        }

        mod four_shards {
            $(
                #[test]
                fn $test() {
                    ferrokv_tests::script::run_compat_file(
                        &ferrokv_tests::script::compat_dir().join($file),
                        Some(4),
                    );
                }
            )*
        }

        const REGISTERED_SCRIPTS: &[&str] = &[$($file),*];
    };
}

compat_scripts! {
    kv_put => "kv_put.txt",
    kv_get => "kv_get.txt",
    kv_get_sort => "kv_get_sort.txt",
    kv_get_sort_ties => "kv_get_sort_ties.txt",
    kv_get_formats => "kv_get_formats.txt",
    kv_del => "kv_del.txt",
    kv_txn => "kv_txn.txt",
    kv_compaction => "kv_compaction.txt",
    kv_errors => "kv_errors.txt",
    cluster_status => "cluster_status.txt",
    watch_live => "watch_live.txt",
    watch_history => "watch_history.txt",
    lease => "lease.txt",
    auth => "auth.txt",
    auth_denials => "auth_denials.txt",
}

/// `auth.txt` again with etcd's JWT tokens (`--auth-token jwt,...`) on
/// both servers, for each kind of key: RSA (RS256), EC P-256 (ES256) and
/// P-521 (ES512).
#[test]
fn auth_with_jwt_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    for (kind, method) in [("rsa", "RS256"), ("ec", "ES256"), ("p521", "ES512")] {
        let private = dir.path().join(format!("{kind}.pem")).display().to_string();
        let public = dir.path().join(format!("{kind}.pub")).display().to_string();
        match kind {
            "rsa" => openssl(&["genrsa", "-out", &private, "2048"]),
            "p521" => openssl(&[
                "ecparam",
                "-name",
                "secp521r1",
                "-genkey",
                "-noout",
                "-out",
                &private,
            ]),
            _ => openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &private,
            ]),
        }
        let tool = if kind == "rsa" { "rsa" } else { "ec" };
        openssl(&[tool, "-in", &private, "-pubout", "-out", &public]);
        eprintln!("--- {method}");
        ferrokv_tests::script::run_compat_file_with(
            &compat_dir().join("auth.txt"),
            None,
            vec![format!(
                "--auth-token=jwt,pub-key={public},priv-key={private},sign-method={method},ttl=10m"
            )],
        );
    }
}

/// A script added to testdata/compat but not to the list above would
/// silently never run.
#[test]
fn every_compat_script_is_registered() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(compat_dir())
        .expect("read testdata/compat")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".txt"))
        .collect();
    let registered: BTreeSet<String> = REGISTERED_SCRIPTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        on_disk, registered,
        "testdata/compat/*.txt vs compat_scripts! in tests/compat.rs"
    );
}

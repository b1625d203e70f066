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
    kv_get_formats => "kv_get_formats.txt",
    kv_del => "kv_del.txt",
    kv_txn => "kv_txn.txt",
    kv_compaction => "kv_compaction.txt",
    kv_errors => "kv_errors.txt",
    cluster_status => "cluster_status.txt",
    watch_live => "watch_live.txt",
    watch_history => "watch_history.txt",
    lease => "lease.txt",
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

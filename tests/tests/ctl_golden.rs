//! ferroctl golden output: every script runs with the real etcdctl against
//! one fresh server and with ferroctl against a second, identical one; each
//! step must print the same stdout and stderr and exit with the same code
//! (see `ferrokv_tests::ctl`).
//!
//! Against real etcd and against ferrokv: every script. Where ferrokv does
//! not serve a service yet (Lease, Auth, the member-change RPCs), the steps
//! compare what both clients print for its `Unimplemented` answers; they
//! become full checks of those commands, unchanged, once the server side
//! lands.

use std::collections::BTreeSet;

use ferrokv_tests::ctl::{ctl_dir, run_ctl_golden_file};
use ferrokv_tests::script::compat_dir;
use ferrokv_tests::server::ServerKind;

/// One test per script and server kind, so nextest runs them in parallel
/// and a failure names its script.
macro_rules! golden {
    ($kind:ident, $dir:ident: $($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_ctl_golden_file(&$dir().join($file), ServerKind::$kind);
            }
        )*
    };
}

/// The compat suite's etcdctl scripts, now also a ferroctl check.
mod compat_scripts_on_etcd {
    use super::*;
    golden! { Etcd, compat_dir:
        kv_put => "kv_put.txt",
        kv_get => "kv_get.txt",
        kv_get_sort => "kv_get_sort.txt",
        kv_get_sort_ties => "kv_get_sort_ties.txt",
        auth_compat => "auth.txt",
        auth_denials => "auth_denials.txt",
        kv_get_formats => "kv_get_formats.txt",
        kv_del => "kv_del.txt",
        kv_txn => "kv_txn.txt",
        kv_compaction => "kv_compaction.txt",
        kv_errors => "kv_errors.txt",
        cluster_status => "cluster_status.txt",
        watch_live => "watch_live.txt",
        watch_history => "watch_history.txt",
    }
}

mod compat_scripts_on_ferrokv {
    use super::*;
    golden! { Ferrokv, compat_dir:
        kv_put => "kv_put.txt",
        kv_get => "kv_get.txt",
        kv_get_sort => "kv_get_sort.txt",
        kv_get_sort_ties => "kv_get_sort_ties.txt",
        auth_compat => "auth.txt",
        auth_denials => "auth_denials.txt",
        kv_get_formats => "kv_get_formats.txt",
        kv_del => "kv_del.txt",
        kv_txn => "kv_txn.txt",
        kv_compaction => "kv_compaction.txt",
        kv_errors => "kv_errors.txt",
        cluster_status => "cluster_status.txt",
        watch_live => "watch_live.txt",
        watch_history => "watch_history.txt",
    }
}

mod ctl_scripts_on_etcd {
    use super::*;
    golden! { Etcd, ctl_dir:
        usage => "usage.txt",
        txn_syntax => "txn_syntax.txt",
        lease => "lease.txt",
        maintenance => "maintenance.txt",
        watch => "watch.txt",
        auth => "auth.txt",
        member => "member.txt",
    }
}

mod ctl_scripts_on_ferrokv {
    use super::*;
    golden! { Ferrokv, ctl_dir:
        usage => "usage.txt",
        txn_syntax => "txn_syntax.txt",
        maintenance => "maintenance.txt",
        lease => "lease.txt",
        auth => "auth.txt",
        member => "member.txt",
        watch => "watch.txt",
    }
}

const CTL_SCRIPTS: &[&str] = &[
    "usage.txt",
    "txn_syntax.txt",
    "lease.txt",
    "auth.txt",
    "member.txt",
    "maintenance.txt",
    "watch.txt",
];

/// A script added to testdata/ctl but not listed above would never run.
#[test]
fn every_ctl_script_is_registered() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(ctl_dir())
        .expect("read testdata/ctl")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".txt"))
        .collect();
    let registered: BTreeSet<String> = CTL_SCRIPTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, registered, "testdata/ctl/*.txt vs ctl_golden.rs");
}

//! Entry point for the fuzz target (`fuzz/`) and the stable-Rust replay of
//! its corpus (`tests/tests/fuzz_corpus.rs`): a snapshot file from disk
//! or from a peer. The archive is read in place after one check, so the
//! check is what stands between a damaged file and reads out of bounds:
//! whatever it accepts must then be readable without a panic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rkyv::util::AlignedVec;

use crate::snapshot::{check, header, HEADER_LEN};
use crate::Store;

/// First byte of an input: bit 0 clear, the rest is a whole file; set,
/// the rest is an archive body that gets a header with valid checksums,
/// so that mutations reach the archive check instead of dying at the crc.
pub const MODE_BODY: u8 = 1;

pub fn snapshot(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // A mapping is page aligned; the fuzzer's buffer is not.
    let mut file = AlignedVec::<16>::with_capacity(HEADER_LEN + rest.len());
    if mode & MODE_BODY != 0 {
        file.extend_from_slice(&header(rest));
    }
    file.extend_from_slice(rest);
    if check(&file).is_ok() {
        read_everything(&file);
    }
}

/// Opens an accepted file as the server does (mapped) and reads all of it:
/// ranges, history, and a snapshot written back from it, which must open.
fn read_everything(file: &[u8]) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Relaxed);
    let dir = std::env::temp_dir();
    let path = |what: &str| -> PathBuf {
        dir.join(format!(
            "ferrokv-fuzz-{}-{n}-{what}.rkyv",
            std::process::id()
        ))
    };
    let (src, copy) = (path("in"), path("out"));
    std::fs::write(&src, file).expect("temp dir is writable");
    let (store, _, _) = Store::open_snapshot(&src).expect("a checked file opens");
    let everything = |s: &Store, rev: i64| s.range(b"\0", b"\0", rev, 0, false, false);
    let latest = everything(&store, 0).expect("latest is never compacted");
    for rev in [store.compact_revision(), store.last_revision()] {
        let _ = everything(&store, rev);
    }
    let _ = store.events(b"\0", b"\0", store.compact_revision(), i64::MAX, true);
    let _ = store.live_keys(b"\0", b"\0");
    for lease in store.leases() {
        let _ = store.keys_with_lease(lease);
    }
    store
        .write_snapshot(&copy, 0, b"")
        .expect("a readable store writes a snapshot");
    let (again, _, _) = Store::open_snapshot(&copy).expect("a written snapshot opens");
    assert_eq!(everything(&again, 0).ok(), Some(latest));
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&copy);
}

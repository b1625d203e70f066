//! The two kinds of snapshot file the tools meet: an etcd bbolt database
//! (`etcdctl snapshot save` against etcd) and a ferrokv backup (the same
//! command against ferrokv, `ferrokv_shards::backup`). `snapshot status`
//! reports either in etcdctl's shape; restore handles ferrokv backups.

use std::path::Path;

use ferrokv_shards::backup;

use crate::bolt::SnapshotStatus;

/// `snapshot status` of either kind of file.
pub fn status(data: &[u8]) -> Result<SnapshotStatus, String> {
    if !data.starts_with(backup::MAGIC) {
        return crate::bolt::snapshot_status(data);
    }
    let scratch = Scratch::new()?;
    let st = backup::status(data, &scratch.0)?;
    Ok(SnapshotStatus {
        hash: st.hash,
        revision: st.revision,
        total_key: i64::try_from(st.total_keys).unwrap_or(i64::MAX),
        total_size: i64::try_from(st.total_size).unwrap_or(i64::MAX),
    })
}

/// `snapshot restore` of a ferrokv backup into a new data dir; an etcd
/// database is refused with what to use instead.
pub fn restore(
    data: &[u8],
    data_dir: &Path,
    skip_hash_check: bool,
) -> Result<backup::Status, String> {
    if !data.starts_with(backup::MAGIC) {
        return Err(
            "not a ferrokv backup: an etcd snapshot is restored with etcdctl/etcdutl \
             snapshot restore into an etcd member"
                .into(),
        );
    }
    backup::restore(data, data_dir, skip_hash_check)
}

/// A private directory under the system temp dir, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!(
            "ferroutl-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

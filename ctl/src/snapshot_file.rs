//! The two kinds of snapshot file the tools meet: an etcd bbolt database
//! (`etcdctl snapshot save` against etcd) and a ferrokv backup (the same
//! command against ferrokv, `ferrokv_shards::backup`). `snapshot status`
//! reports either in etcdctl's shape; restore makes a ferrokv member of
//! either.

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

/// `snapshot restore` into a new data dir: a ferrokv backup as it was
/// taken; an etcd snapshot (or a stopped etcd member's `db`) imported
/// with its whole retained history, split over `shards` shards.
pub fn restore(
    data: &[u8],
    data_dir: &Path,
    skip_hash_check: bool,
    shards: u32,
) -> Result<backup::Status, String> {
    if data.starts_with(backup::MAGIC) {
        return backup::restore(data, data_dir, skip_hash_check);
    }
    let db = etcd_db(data, skip_hash_check)?;
    let imported = crate::bolt::etcd_history(db)?;
    backup::restore_imported(&imported, data_dir, shards, data.len() as u64)
}

/// An etcd snapshot's database, its SHA-256 checked as etcd's restore
/// checks it (in etcd's words): `etcdctl snapshot save` appends one after
/// a database of 512-byte pages; a `db` copied from a data dir has none.
fn etcd_db(data: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    use sha2::Digest;
    let has_hash = data.len() % 512 == backup::HASH_LEN;
    if !has_hash {
        if !skip_hash_check {
            return Err("snapshot missing hash but --skip-hash-check=false".into());
        }
        return Ok(data);
    }
    let (db, want) = data.split_at(data.len() - backup::HASH_LEN);
    if !skip_hash_check {
        let got = sha2::Sha256::digest(db);
        if got.as_slice() != want {
            return Err(format!(
                "expected sha256 {}, got {}",
                go_bytes(want),
                go_bytes(&got)
            ));
        }
    }
    Ok(db)
}

/// A byte slice as Go's `%v` prints it.
fn go_bytes(b: &[u8]) -> String {
    let words: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", words.join(" "))
}

/// etcd's `snapshot restore` flags.
pub struct RestoreRequest<'a> {
    pub file: &'a str,
    pub name: &'a str,
    /// `--initial-cluster` (etcd's default: `default=http://localhost:2380`).
    pub initial_cluster: &'a str,
    pub peer_urls: &'a str,
    /// `NAME.ferrokv` when not given.
    pub data_dir: Option<&'a str>,
    pub wal_dir: Option<&'a str>,
    pub skip_hash_check: bool,
    /// `--shards` (ferrokv's): how an etcd snapshot's keys are split; a
    /// ferrokv backup keeps its own count.
    pub shards: Option<u32>,
}

/// `snapshot restore` into a new member data dir, with etcd's check that
/// the member is in the cluster it is told about with the peer URLs it
/// will advertise; the answer says how to start the member.
pub fn restore_member(req: &RestoreRequest) -> Result<String, String> {
    let (name, peer_urls) = (req.name, req.peer_urls);
    let cluster = req.initial_cluster;
    let mine: Vec<&str> = cluster
        .split(',')
        .filter_map(|m| m.split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, u)| u)
        .collect();
    if mine.is_empty() {
        return Err(format!(
            "couldn't find local name {name:?} in the initial cluster configuration"
        ));
    }
    let mut want: Vec<&str> = peer_urls.split(',').collect();
    let mut have = mine.clone();
    want.sort_unstable();
    have.sort_unstable();
    if want != have {
        return Err(format!(
            "--initial-cluster has {name}={} but --initial-advertise-peer-urls is {peer_urls}",
            mine.join(",")
        ));
    }
    let data_dir = std::path::PathBuf::from(
        req.data_dir
            .map_or_else(|| format!("{name}.ferrokv"), str::to_string),
    );
    let data = std::fs::read(req.file).map_err(|e| crate::gofmt::io_error("open", req.file, &e))?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let shards = req
        .shards
        .unwrap_or_else(|| u32::try_from(cores).unwrap_or(1));
    let st = restore(&data, &data_dir, req.skip_hash_check, shards)?;
    // A restored member's logs start empty: with --wal-dir they are made
    // there when it starts with the same flag.
    let wal_flag = req
        .wal_dir
        .map_or_else(String::new, |w| format!(" --wal-dir {w}"));
    Ok(format!(
        "restored snapshot {} at revision {} ({} keys, {} shards) into {}\n\
         start the member with: ferrokv --name {name} --data-dir {}{wal_flag} --shards {} \
         --initial-advertise-peer-urls {peer_urls} --initial-cluster {cluster}\n",
        req.file,
        st.revision,
        st.total_keys,
        st.shards,
        data_dir.display(),
        data_dir.display(),
        st.shards,
    ))
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

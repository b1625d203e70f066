//! The backup file: what `Maintenance.Snapshot` streams (so `etcdctl
//! snapshot save` and `ferroctl snapshot save` write it) and what `ferroutl
//! snapshot status/restore` read. One consistent point of every shard:
//!
//! ```text
//! magic "FERROKV-BACKUP\0" + version byte 1   16 bytes
//! shard count                                 u32 LE
//! revision, compact revision                  i64 LE each
//! per shard, in shard order: length u64 LE, then a shard snapshot file
//!   (`Store::write_snapshot`: its own checksums; lease table as meta;
//!   applied index 0, so a restored member starts a fresh log)
//! zero bytes up to a multiple of 512
//! SHA-256 of everything before it             32 bytes
//! ```
//!
//! etcd appends a SHA-256 to its snapshot stream the same way, after a
//! database made of 512-byte multiples; `etcdctl snapshot save` refuses a
//! stream whose length is not such a multiple plus 32 ("sha256 checksum
//! not found"), hence the padding.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 16] = b"FERROKV-BACKUP\0\x01";
pub const HEADER_LEN: usize = 16 + 4 + 8 + 8;
pub const HASH_LEN: usize = 32;
/// What the content before the hash is padded to.
pub const ALIGN: u64 = 512;

/// Zero bytes to append after `len` bytes of content.
pub fn padding(len: u64) -> u64 {
    (ALIGN - len % ALIGN) % ALIGN
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub shards: u32,
    pub revision: i64,
    pub compact_revision: i64,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.shards.to_le_bytes());
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&self.compact_revision.to_le_bytes());
        out
    }
}

/// A parsed backup: the header and each shard's snapshot bytes.
#[derive(Debug)]
pub struct Backup<'a> {
    pub header: Header,
    pub parts: Vec<&'a [u8]>,
}

/// The streaming hash writers and readers share.
pub fn hasher() -> Sha256 {
    Sha256::new()
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err(format!(
            "truncated backup: {what} needs {n} bytes, {} left",
            buf.len()
        ));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Parses and checks a whole backup file. The SHA-256 must match unless
/// `skip_hash_check` (then a file without one, as a raw copy, is accepted
/// too); every part is then a shard snapshot the caller opens, which
/// checks its own checksums.
pub fn parse(file: &[u8], skip_hash_check: bool) -> Result<Backup<'_>, String> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err("not a ferrokv backup (bad magic; an etcd snapshot is not one)".into());
    }
    let body = if file.len() >= HEADER_LEN + HASH_LEN {
        let (body, hash) = file.split_at(file.len() - HASH_LEN);
        let want = Sha256::digest(body);
        if want.as_slice() != hash {
            if !skip_hash_check {
                return Err("snapshot file integrity check failed: SHA-256 mismatch \
                     (the file is damaged or incomplete; --skip-hash-check to use it anyway)"
                    .into());
            }
            file
        } else {
            body
        }
    } else if skip_hash_check {
        file
    } else {
        return Err("snapshot file integrity check failed: too short to hold a SHA-256".into());
    };
    let mut buf = &body[MAGIC.len()..];
    let shards = u32::from_le_bytes(
        take(&mut buf, 4, "shard count")?
            .try_into()
            .map_err(|_| "shard count")?,
    );
    let revision = le_u64(take(&mut buf, 8, "revision")?) as i64;
    let compact_revision = le_u64(take(&mut buf, 8, "compact revision")?) as i64;
    if shards == 0 || shards > 4096 {
        return Err(format!("backup names {shards} shards"));
    }
    let mut parts = Vec::with_capacity(shards as usize);
    for s in 0..shards {
        let len = le_u64(take(&mut buf, 8, &format!("shard {s} length"))?);
        let len = usize::try_from(len).map_err(|_| format!("shard {s}: length {len}"))?;
        parts.push(take(&mut buf, len, &format!("shard {s}"))?);
    }
    if !skip_hash_check && (buf.len() as u64 >= ALIGN || buf.iter().any(|b| *b != 0)) {
        return Err(format!(
            "{} unexpected bytes after the last shard",
            buf.len()
        ));
    }
    Ok(Backup {
        header: Header {
            shards,
            revision,
            compact_revision,
        },
        parts,
    })
}

/// What `snapshot status` reports of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// CRC-32C of every shard part, in order.
    pub hash: u32,
    pub revision: i64,
    pub total_keys: u64,
    pub total_size: u64,
    pub shards: u32,
}

/// Writes each part to `scratch` and opens it as a shard snapshot, which
/// checks the part's own checksums; returns the live key counts.
fn open_parts(b: &Backup<'_>, scratch: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let mut out = Vec::with_capacity(b.parts.len());
    for (i, part) in b.parts.iter().enumerate() {
        let path = scratch.join(format!("shard-{i}.rkyv"));
        std::fs::write(&path, part).map_err(|e| format!("{}: {e}", path.display()))?;
        let (store, _, meta) = ferrokv_mvcc::Store::open_snapshot(&path)
            .map_err(|e| format!("shard {i} of the backup: {e}"))?;
        crate::shard::decode_lease_meta(&meta).map_err(|e| format!("shard {i}: {e}"))?;
        out.push((path, store.key_count() as u64));
    }
    Ok(out)
}

/// `snapshot status` of a backup file.
pub fn status(file: &[u8], scratch: &Path) -> Result<Status, String> {
    let b = parse(file, false)?;
    let parts = open_parts(&b, scratch)?;
    Ok(summary(&b, &parts, file.len()))
}

fn summary(b: &Backup<'_>, parts: &[(PathBuf, u64)], file_len: usize) -> Status {
    let mut hash = 0u32;
    for p in &b.parts {
        hash = crc32c::crc32c_append(hash, p);
    }
    Status {
        hash,
        revision: b.header.revision,
        total_keys: parts.iter().map(|(_, n)| n).sum(),
        total_size: file_len as u64,
        shards: b.header.shards,
    }
}

/// `snapshot restore`: a new data dir holding the backup, which `ferrokv
/// --data-dir DIR --shards N` (N = the backup's shard count) opens as a
/// member at the backup's revision, with a fresh log. Refuses a data dir
/// that already has a member.
pub fn restore(file: &[u8], data_dir: &Path, skip_hash_check: bool) -> Result<Status, String> {
    let b = parse(file, skip_hash_check)?;
    let mut status = None;
    install_member(data_dir, b.header.shards, |scratch| {
        let parts = open_parts(&b, scratch)?;
        status = Some(summary(&b, &parts, file.len()));
        for (i, (path, _)) in parts.iter().enumerate() {
            let shard_dir = scratch.join(format!("shard-{i}"));
            std::fs::create_dir_all(&shard_dir)
                .map_err(|e| format!("{}: {e}", shard_dir.display()))?;
            let dest = shard_dir.join("snapshot.rkyv");
            std::fs::rename(path, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        Ok(())
    })?;
    status.ok_or_else(|| "restore wrote no member".to_string())
}

/// Writes a new member into `data_dir` through `fill(scratch)`, which puts
/// `shard-i/snapshot.rkyv` for every shard into the scratch dir; only a
/// complete member directory ever carries the name ferrokv opens. Refuses
/// a data dir that already has a member.
fn install_member(
    data_dir: &Path,
    shards: u32,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let member = data_dir.join("member");
    if member.exists() {
        return Err(format!(
            "data-dir {:?} exists and holds a member; restore into a new directory",
            data_dir.display().to_string()
        ));
    }
    let scratch = data_dir.join("member.restoring");
    if scratch.exists() {
        // Left by a restore that did not finish.
        std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    fill(&scratch)?;
    let shards_file = scratch.join("shards");
    std::fs::write(&shards_file, format!("{shards}\n"))
        .map_err(|e| format!("{}: {e}", shards_file.display()))?;
    std::fs::rename(&scratch, &member).map_err(|e| format!("{}: {e}", member.display()))
}

pub use ferrokv_mvcc::ImportedRecord;

/// A keyspace read from another store, ready to become a member.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// In (main, sub) order.
    pub records: Vec<ImportedRecord>,
    /// (id, TTL) of every lease.
    pub leases: Vec<(i64, i64)>,
    /// The source's compaction point (0: never compacted).
    pub compact_revision: i64,
}

/// `snapshot restore` of an etcd snapshot: the imported keyspace split
/// over `shards` shards by ferrokv's routing, each record keeping its
/// revision, create revision and version, the source's compaction
/// applied, leases on their owning shards; every shard ends at the
/// source's last revision. `file_len` is reported as the total size.
pub fn restore_imported(
    imported: &Imported,
    data_dir: &Path,
    shards: u32,
    file_len: u64,
) -> Result<Status, String> {
    if shards == 0 {
        return Err("--shards must be at least 1".into());
    }
    let mut stores: Vec<ferrokv_mvcc::Store> =
        (0..shards).map(|_| ferrokv_mvcc::Store::new()).collect();
    let mut last = 0;
    for r in &imported.records {
        let shard = crate::kv::shard_of(&r.key, shards) as usize;
        stores[shard]
            .import_record(r.clone())
            .map_err(|e| e.to_string())?;
        last = last.max(r.main);
    }
    let mut leases: Vec<Vec<(i64, i64)>> = vec![Vec::new(); shards as usize];
    for &(id, ttl) in &imported.leases {
        leases[crate::kv::lease_shard(id, shards) as usize].push((id, ttl));
    }
    let compact = imported.compact_revision.min(last);
    let mut hash = 0u32;
    let mut total_keys = 0u64;
    install_member(data_dir, shards, |scratch| {
        for (i, store) in stores.iter_mut().enumerate() {
            // Every shard at the source's revision, as after a backup.
            if last > 0 {
                store.apply(last, &[]);
            }
            if compact > 0 {
                store.compact(compact).map_err(|e| e.to_string())?;
            }
            total_keys += store.key_count() as u64;
            let shard_dir = scratch.join(format!("shard-{i}"));
            std::fs::create_dir_all(&shard_dir)
                .map_err(|e| format!("{}: {e}", shard_dir.display()))?;
            let path = shard_dir.join("snapshot.rkyv");
            let meta = crate::shard::encode_lease_meta(&leases[i]);
            store
                .write_snapshot(&path, 0, &meta)
                .map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            hash = crc32c::crc32c_append(hash, &bytes);
        }
        Ok(())
    })?;
    Ok(Status {
        hash,
        revision: last,
        total_keys,
        total_size: file_len,
        shards,
    })
}

/// Assembles a backup in memory (tests; the server streams it instead).
pub fn assemble(header: &Header, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = header.encode();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out.resize(out.len() + padding(out.len() as u64) as usize, 0);
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// Entry point for the fuzz target (`fuzz/`) and the replay of its corpus:
/// a backup file handed to `ferroutl snapshot status/restore`.
#[doc(hidden)]
pub mod fuzzing {
    /// First byte of an input: bit 0 set, parse as `--skip-hash-check`
    /// does (the path that reads a file whose SHA-256 does not hold).
    pub const SKIP_HASH_CHECK: u8 = 1;

    pub fn parse(data: &[u8]) {
        let Some((&flags, file)) = data.split_first() else {
            return;
        };
        if let Ok(b) = super::parse(file, flags & SKIP_HASH_CHECK != 0) {
            assert_eq!(b.parts.len(), b.header.shards as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_refused() {
        let header = Header {
            shards: 2,
            revision: 42,
            compact_revision: 7,
        };
        let parts = vec![b"shard zero".to_vec(), b"one".to_vec()];
        let file = assemble(&header, &parts);
        assert_eq!(
            file.len() as u64 % ALIGN,
            HASH_LEN as u64,
            "etcdctl's check"
        );
        let b = parse(&file, false).unwrap();
        assert_eq!(b.header, header);
        assert_eq!(b.parts, vec![&b"shard zero"[..], &b"one"[..]]);
        let mut bad = file.clone();
        bad[HEADER_LEN + 8 + 9] ^= 1;
        let e = parse(&bad, false).unwrap_err();
        assert!(e.contains("integrity check failed"), "{e}");
        assert_eq!(parse(&bad, true).unwrap().parts[0], b"shard zern");
        for cut in [0, 10, HEADER_LEN, HEADER_LEN + 20, file.len() - 1] {
            assert!(parse(&file[..cut], false).is_err(), "cut at {cut}");
        }
        assert!(parse(b"not a backup at all, really not", true).is_err());
    }
}

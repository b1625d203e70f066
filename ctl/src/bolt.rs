//! A read-only walk over a bbolt file (etcd's backend and snapshot
//! format), enough for `snapshot status` (etcd's hash: CRC-32C over every
//! bucket name, key and value in order; the latest revision, the key
//! count and the size bbolt reports) and for `snapshot restore` of an etcd
//! snapshot into ferrokv (the `key`, `lease` and `meta` buckets).
//!
//! Layout (bbolt's, little-endian): every page starts with a 16-byte
//! header (id u64, flags u16, count u16, overflow u32); pages 0 and 1 are
//! meta pages (magic, version, page size, flags, root bucket {pgid, seq},
//! freelist, high-water pgid, txid, checksum) and the valid one with the
//! higher txid wins; branch elements are (pos u32, ksize u32, pgid u64),
//! leaf elements (flags u32, pos u32, ksize u32, vsize u32), positions
//! relative to the element; a bucket's value is {root pgid u64, seq u64},
//! followed by an inline page when root is 0.

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const MAGIC: u32 = 0xED0C_DAED;
const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Bounds the branch pages above a leaf: bbolt's trees are a few levels
/// deep, and a corrupt file whose pages point in a circle must not recurse
/// until the stack overflows.
const BRANCH_DEPTH_MAX: usize = 64;

/// What `etcdctl snapshot status` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    pub total_key: i64,
    pub total_size: i64,
}

/// Called for each entry of a page walk: (db, key, value, is_bucket).
type Visit<'v, 'a> = dyn FnMut(&mut Db<'a>, &'a [u8], &'a [u8], bool) -> Result<(), String> + 'v;

struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    /// A sound tree visits each page once, and a page (an inline one too)
    /// takes at least a header's bytes: more visits than the file has room
    /// for pages means pages that point at each other, whose walk would
    /// otherwise multiply at every level.
    visits_left: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const INVALID: &str = "invalid database";

impl<'a> Db<'a> {
    fn page(&self, id: u64) -> Result<&'a [u8], String> {
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or(INVALID)?;
        // The file decides these numbers: no arithmetic may overflow.
        let overflow_at = start.checked_add(12).ok_or(INVALID)?;
        let overflow = u32_at(self.data, overflow_at).ok_or(INVALID)? as usize;
        let end = overflow
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(self.page_size))
            .and_then(|len| len.checked_add(start))
            .ok_or(INVALID)?;
        self.data
            .get(start..end.min(self.data.len()))
            .ok_or_else(|| INVALID.to_string())
    }

    /// Calls `f(key, value, is_bucket)` for every entry under the page
    /// `page` (a slice starting with a page header), in key order.
    fn walk(&mut self, page: &'a [u8], f: &mut Visit<'_, 'a>) -> Result<(), String> {
        self.walk_at(page, f, 0)
    }

    fn walk_at(
        &mut self,
        page: &'a [u8],
        f: &mut Visit<'_, 'a>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > BRANCH_DEPTH_MAX {
            return Err(INVALID.into());
        }
        self.visits_left = self.visits_left.checked_sub(1).ok_or(INVALID)?;
        let flags = u16_at(page, 8).ok_or(INVALID)?;
        let count = u16_at(page, 10).ok_or(INVALID)? as usize;
        for i in 0..count {
            let elem = PAGE_HEADER + i * ELEMENT;
            if flags & BRANCH_PAGE != 0 {
                let child = u64_at(page, elem + 8).ok_or(INVALID)?;
                let child_page = self.page(child)?;
                self.walk_at(child_page, f, depth + 1)?;
            } else if flags & LEAF_PAGE != 0 {
                let eflags = u32_at(page, elem).ok_or(INVALID)?;
                let pos = u32_at(page, elem + 4).ok_or(INVALID)? as usize;
                let ksize = u32_at(page, elem + 8).ok_or(INVALID)? as usize;
                let vsize = u32_at(page, elem + 12).ok_or(INVALID)? as usize;
                let kstart = elem + pos;
                let key = page.get(kstart..kstart + ksize).ok_or(INVALID)?;
                let value = page
                    .get(kstart + ksize..kstart + ksize + vsize)
                    .ok_or(INVALID)?;
                f(self, key, value, eflags & BUCKET_LEAF_FLAG != 0)?;
            } else {
                return Err(INVALID.into());
            }
        }
        Ok(())
    }

    /// The root page of a bucket from its value in the parent.
    fn bucket_root(&self, value: &'a [u8]) -> Result<&'a [u8], String> {
        let root = u64_at(value, 0).ok_or(INVALID)?;
        if root == 0 {
            return value.get(16..).ok_or_else(|| INVALID.to_string());
        }
        self.page(root)
    }
}

/// The newest valid meta page's database: the walker, its root page and
/// its size in bytes as bbolt reports it.
fn open(data: &[u8]) -> Result<(Db<'_>, &[u8], i64), String> {
    let meta_at = |offset: usize| -> Option<(u32, u64, u64, u64)> {
        let m = offset + PAGE_HEADER;
        if u32_at(data, m)? != MAGIC || u32_at(data, m + 4)? != 2 {
            return None;
        }
        let page_size = u32_at(data, m + 8)?;
        let root = u64_at(data, m + 16)?;
        let pgid = u64_at(data, m + 40)?;
        let txid = u64_at(data, m + 48)?;
        let checksum = u64_at(data, m + 56)?;
        if fnv64a(data.get(m..m + 56)?) != checksum {
            return None;
        }
        Some((page_size, root, pgid, txid))
    };
    let first = meta_at(0).ok_or(INVALID)?;
    let second = meta_at(first.0 as usize);
    let (page_size, root, pgid, _) = match second {
        Some(s) if s.3 > first.3 => s,
        _ => first,
    };
    if page_size < 1024 {
        return Err(INVALID.into());
    }
    let db = Db {
        data,
        page_size: page_size as usize,
        visits_left: data.len() / PAGE_HEADER + 1,
    };
    let root_page = db.page(root)?;
    let size = i64::try_from(pgid.saturating_mul(u64::from(page_size))).unwrap_or(i64::MAX);
    Ok((db, root_page, size))
}

/// Reads a snapshot (or a stopped member's `db`) as etcdctl's
/// `snapshot status` does.
pub fn snapshot_status(data: &[u8]) -> Result<SnapshotStatus, String> {
    let (mut db, root_page, total_size) = open(data)?;
    let mut status = SnapshotStatus {
        total_size,
        ..SnapshotStatus::default()
    };
    let mut crc = 0u32;
    db.walk(root_page, &mut |db, name, value, is_bucket| {
        if !is_bucket {
            return Err(format!(
                "cannot get hash of bucket {}",
                String::from_utf8_lossy(name)
            ));
        }
        crc = crc32c::crc32c_append(crc, name);
        let is_key_bucket = name == b"key";
        let bucket = db.bucket_root(value)?;
        db.walk(bucket, &mut |_, k, v, _| {
            crc = crc32c::crc32c_append(crc, k);
            crc = crc32c::crc32c_append(crc, v);
            if is_key_bucket {
                if let Some(main) = k.get(..8) {
                    status.revision = i64::from_be_bytes(main.try_into().unwrap_or([0; 8]));
                }
            }
            status.total_key += 1;
            Ok(())
        })
    })?;
    status.hash = crc;
    Ok(status)
}

/// etcd's lease record (`leasepb.Lease`): the fields a restore needs.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
}

/// A revision as etcd's backend writes it: main and sub big-endian around
/// a `_` (17 bytes), then `t` for a tombstone.
fn revision_key(k: &[u8]) -> Option<(i64, i64, bool)> {
    if k.len() < 17 || k[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(k[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
    Some((main, sub, k.get(17) == Some(&b't')))
}

/// The keyspace of an etcd database for `snapshot restore` into ferrokv:
/// every record of the `key` bucket (revision order, as bbolt sorts the
/// revision keys), the `lease` bucket, and the compaction point from
/// `meta`. A record that does not decode is an error naming its revision.
pub fn etcd_history(data: &[u8]) -> Result<ferrokv_shards::backup::Imported, String> {
    use prost::Message;
    let (mut db, root_page, _) = open(data)?;
    let mut out = ferrokv_shards::backup::Imported::default();
    let mut saw_keys = false;
    db.walk(root_page, &mut |db, name, value, is_bucket| {
        if !is_bucket {
            return Ok(());
        }
        let bucket = db.bucket_root(value)?;
        match name {
            b"key" => {
                saw_keys = true;
                db.walk(bucket, &mut |_, k, v, _| {
                    let (main, sub, tombstone) = revision_key(k)
                        .ok_or_else(|| format!("key bucket: bad revision key {k:02x?}"))?;
                    let kv = ferrokv_wire::pb::mvccpb::KeyValue::decode(v)
                        .map_err(|e| format!("key bucket: revision {main}_{sub}: {e}"))?;
                    out.records.push(ferrokv_shards::backup::ImportedRecord {
                        key: kv.key.to_vec(),
                        main,
                        sub,
                        create: kv.create_revision,
                        version: if tombstone { 0 } else { kv.version.max(1) },
                        lease: kv.lease,
                        value: kv.value.to_vec(),
                    });
                    Ok(())
                })
            }
            b"lease" => db.walk(bucket, &mut |_, _, v, _| {
                let l = LeaseRecord::decode(v).map_err(|e| format!("lease bucket: {e}"))?;
                out.leases.push((l.id, l.ttl));
                Ok(())
            }),
            b"meta" => db.walk(bucket, &mut |_, k, v, _| {
                if k == b"finishedCompactRev" {
                    if let Some((main, _, _)) = revision_key(v) {
                        out.compact_revision = main;
                    }
                }
                Ok(())
            }),
            _ => Ok(()),
        }
    })?;
    if !saw_keys {
        return Err("not an etcd database: it has no key bucket".into());
    }
    Ok(out)
}

fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Entry point for the fuzz target (`fuzz/`) and the replay of its corpus:
/// an etcd snapshot (or a member's `db`) handed to `ferroutl`.
#[doc(hidden)]
pub mod fuzzing {
    /// Both walks `snapshot status` and `snapshot restore` make.
    pub fn read(data: &[u8]) {
        let _ = super::snapshot_status(data);
        let _ = super::etcd_history(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_invalid_database() {
        assert_eq!(
            snapshot_status(b"garbage\n").unwrap_err(),
            "invalid database"
        );
        assert_eq!(
            snapshot_status(&[0u8; 8192]).unwrap_err(),
            "invalid database"
        );
    }

    /// A meta page whose root page id times the page size lands within 12
    /// bytes of usize::MAX: reading the page's overflow count at
    /// `start + 12` overflowed (a panic in a debug build).
    #[test]
    fn a_root_page_at_the_end_of_the_address_space_is_an_invalid_database() {
        // 65,535 divides 2^64 - 1, so this page starts at usize::MAX.
        const PAGE: u32 = 65_535;
        let root = u64::MAX / u64::from(PAGE);
        let mut db = vec![0u8; 4096];
        let m = PAGE_HEADER;
        db[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
        db[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
        db[m + 8..m + 12].copy_from_slice(&PAGE.to_le_bytes());
        db[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
        db[m + 40..m + 48].copy_from_slice(&3u64.to_le_bytes());
        let sum = fnv64a(&db[m..m + 56]);
        db[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(snapshot_status(&db).unwrap_err(), "invalid database");
        assert_eq!(etcd_history(&db).unwrap_err(), "invalid database");
    }

    /// A branch page whose only child is itself (found by fuzzing: the
    /// walk recursed until the stack overflowed).
    #[test]
    fn a_page_that_points_at_itself_is_an_invalid_database() {
        const PAGE: usize = 4096;
        let mut db = vec![0u8; 3 * PAGE];
        for (meta, txid) in [(0usize, 1u64), (1, 0)] {
            let m = meta * PAGE + PAGE_HEADER;
            db[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            db[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
            db[m + 8..m + 12].copy_from_slice(&(PAGE as u32).to_le_bytes());
            db[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes());
            db[m + 40..m + 48].copy_from_slice(&3u64.to_le_bytes());
            db[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv64a(&db[m..m + 56]);
            db[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        }
        let root = 2 * PAGE;
        db[root + 8..root + 10].copy_from_slice(&BRANCH_PAGE.to_le_bytes());
        db[root + 10..root + 12].copy_from_slice(&1u16.to_le_bytes());
        db[root + PAGE_HEADER + 8..root + PAGE_HEADER + 16].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(snapshot_status(&db).unwrap_err(), "invalid database");
        assert_eq!(etcd_history(&db).unwrap_err(), "invalid database");
    }
}

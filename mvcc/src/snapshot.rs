//! On-disk snapshot format of one shard's store.
//!
//! Layout: a fixed 64-byte header followed by an rkyv archive of [`Snapshot`].
//! The header is 64 bytes so that the archive starts 16-byte aligned inside
//! the page-aligned mapping, which rkyv needs to read it in place.
//!
//! | offset | field                                   |
//! |--------|-----------------------------------------|
//! | 0..8   | magic `FKVMVCC\0`                       |
//! | 8..12  | format version (u32 le)                 |
//! | 12..16 | zero                                    |
//! | 16..24 | body length in bytes (u64 le)           |
//! | 24..28 | crc32c of the body (u32 le)             |
//! | 28..32 | crc32c of header bytes 0..28 (u32 le)   |
//! | 32..64 | zero                                    |

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use rkyv::rancor;

use crate::Error;

pub(crate) const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"FKVMVCC\0";
const FORMAT_VERSION: u32 = 1;

/// One retained revision of a key. `version == 0` marks a tombstone, as in
/// etcd where a deletion record carries no create revision or version.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
pub(crate) struct SnapRec {
    pub main: i64,
    pub sub: i64,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
}

/// A key and its retained history, oldest first.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
pub(crate) struct SnapKey {
    pub key: Vec<u8>,
    pub recs: Vec<SnapRec>,
}

/// Revision index entry: lets watch catch-up walk revisions in order without
/// visiting every key.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
pub(crate) struct SnapRevEntry {
    pub main: i64,
    pub sub: i64,
    pub key_idx: u32,
    pub rec_idx: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
pub(crate) struct Snapshot {
    pub compact_rev: i64,
    pub last_main: i64,
    pub last_written_main: i64,
    pub last_written_sub: i64,
    pub applied_index: u64,
    pub meta: Vec<u8>,
    /// Sorted by key, strictly ascending; every key has at least one record.
    pub keys: Vec<SnapKey>,
    /// Sorted by (main, sub), strictly ascending.
    pub revs: Vec<SnapRevEntry>,
}

fn snap_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Snapshot(format!("{}: {}", path.display(), what))
}

pub(crate) fn header(body: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    h[24..28].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&hcrc.to_le_bytes());
    h
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// How much of a snapshot file is written before it is sent to the disk
/// and waited for (RocksDB's `bytes_per_sync`). A whole file left to the
/// final fsync is tens of MB the disk writes at once, and on ext4 the
/// WAL's fdatasync waits for the journal commit that flushes it: writes
/// stalled for as long (about 200 ms for 37 MB, `perf/stalls.sh`).
const WRITE_BEHIND_BYTES: usize = 1 << 20;

/// Writes `len` bytes at `offset` of `f` to the disk and waits for them
/// (`sync_file_range`: the data only, no journal commit, so it does not
/// make others' fsyncs wait). Durability still comes from the final fsync.
fn write_behind(f: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a descriptor `f` keeps open; the call reads no memory of ours.
    if unsafe { libc::sync_file_range(f.as_raw_fd(), offset, len, flags) } != 0 {
        let e = std::io::Error::last_os_error();
        // A filesystem without it (ENOSYS, EINVAL on some): the final
        // fsync does it all, as before.
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
            return Err(e);
        }
    }
    Ok(())
}

/// Serializes `snap` and installs it atomically at `path` (tmp + fsync +
/// rename + directory fsync), so a crash leaves either the old or the new
/// file, never a torn one under the final name.
pub(crate) fn write(path: &Path, snap: &Snapshot) -> Result<u64, Error> {
    let body = rkyv::to_bytes::<rancor::Error>(snap).map_err(|e| snap_err(path, e))?;
    // First half of the assertion pair: never install an archive that would
    // fail validation when mapped.
    rkyv::access::<ArchivedSnapshot, rancor::Error>(&body)
        .map_err(|e| snap_err(path, format!("archive failed validation after write: {e}")))?;
    let h = header(&body);
    let tmp = tmp_path(path);
    let io = |e: std::io::Error| snap_err(&tmp, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&h).map_err(io)?;
    let mut at = h.len() as u64;
    for part in body.chunks(WRITE_BEHIND_BYTES) {
        f.write_all(part).map_err(io)?;
        write_behind(&f, at, part.len() as u64).map_err(io)?;
        at += part.len() as u64;
    }
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| snap_err(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| snap_err(&dir, e))?;
    Ok((HEADER_LEN + body.len()) as u64)
}

/// A mapped, verified snapshot file. The archive is read in place.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("len", &self.map.len())
            .finish()
    }
}

impl Mapped {
    pub(crate) fn open(path: &Path) -> Result<Mapped, Error> {
        let file = File::open(path).map_err(|e| snap_err(path, e))?;
        let len = file.metadata().map_err(|e| snap_err(path, e))?.len();
        if len < HEADER_LEN as u64 {
            return Err(snap_err(path, format!("truncated: {len} bytes")));
        }
        // SAFETY: snapshot files are written once under a temporary name and
        // renamed into place; nothing writes to them afterwards, so the
        // mapping is not mutated underneath us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| snap_err(path, e))?;
        check(&map).map_err(|e| snap_err(path, e))?;
        Ok(Mapped { map })
    }

    pub(crate) fn root(&self) -> &ArchivedSnapshot {
        // SAFETY: `open` validated this exact byte range with bytecheck and
        // the mapping is immutable for the lifetime of `self`.
        unsafe { rkyv::access_unchecked::<ArchivedSnapshot>(&self.map[HEADER_LEN..]) }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Everything `Mapped::open` checks before the archive is read in place
/// (zero-copy, without further checks): header, lengths, checksums, the
/// archive's structure (bytecheck) and the ordering invariants. `b` is the
/// whole file and must start 16-byte aligned, as a mapping does.
pub(crate) fn check(b: &[u8]) -> Result<(), String> {
    if b.len() < HEADER_LEN {
        return Err(format!("truncated: {} bytes", b.len()));
    }
    if &b[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    if read_u32(b, 28) != crc32c::crc32c(&b[0..28]) {
        return Err("header checksum mismatch".into());
    }
    let version = read_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let body_len = read_u64(b, 16);
    if body_len != (b.len() - HEADER_LEN) as u64 {
        return Err(format!(
            "length mismatch: header says {body_len}, file has {}",
            b.len() - HEADER_LEN
        ));
    }
    let body = &b[HEADER_LEN..];
    if read_u32(b, 24) != crc32c::crc32c(body) {
        return Err("body checksum mismatch".into());
    }
    check_body(body)
}

/// The archive half of [`check`], past the checksums.
pub(crate) fn check_body(body: &[u8]) -> Result<(), String> {
    let snap = rkyv::access::<ArchivedSnapshot, rancor::Error>(body)
        .map_err(|e| format!("invalid archive: {e}"))?;
    validate(snap)
}

/// Checks the invariants the store relies on when reading the base, so that
/// a bad file (that still passed its checksum) is an error, not a panic or a
/// wrong answer later.
fn validate(s: &ArchivedSnapshot) -> Result<(), String> {
    let last_written = (
        s.last_written_main.to_native(),
        s.last_written_sub.to_native(),
    );
    if s.compact_rev.to_native() < 0 || s.last_main.to_native() < last_written.0 {
        return Err("inconsistent revision counters".into());
    }
    let mut prev_key: Option<&[u8]> = None;
    let mut total = 0usize;
    for k in s.keys.iter() {
        let key = k.key.as_slice();
        if prev_key.is_some_and(|p| p >= key) {
            return Err("keys not strictly sorted".into());
        }
        prev_key = Some(key);
        if k.recs.is_empty() {
            return Err("key without records".into());
        }
        let mut prev_rev: Option<(i64, i64)> = None;
        for r in k.recs.iter() {
            let rev = (r.main.to_native(), r.sub.to_native());
            if prev_rev.is_some_and(|p| p >= rev) || rev > last_written || rev.0 <= 0 {
                return Err("record revisions out of order".into());
            }
            // One put per revision since the key's creation: a version above
            // its revision (or negative) is damage, and the next put's
            // `version + 1` would overflow on it.
            if !(0..=rev.0).contains(&r.version.to_native()) {
                return Err("record version out of range".into());
            }
            prev_rev = Some(rev);
        }
        total += k.recs.len();
    }
    if s.revs.len() != total {
        return Err("revision index size mismatch".into());
    }
    let mut prev_rev: Option<(i64, i64)> = None;
    for e in s.revs.iter() {
        let rev = (e.main.to_native(), e.sub.to_native());
        if prev_rev.is_some_and(|p| p >= rev) {
            return Err("revision index not sorted".into());
        }
        prev_rev = Some(rev);
        let rec = s
            .keys
            .get(e.key_idx.to_native() as usize)
            .and_then(|k| k.recs.get(e.rec_idx.to_native() as usize))
            .ok_or("revision index entry out of bounds")?;
        if (rec.main.to_native(), rec.sub.to_native()) != rev {
            return Err("revision index entry points at wrong record".into());
        }
    }
    Ok(())
}

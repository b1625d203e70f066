//! A small filesystem of its own for a data dir, to fill up: a tmpfs the
//! test mounts (CI runs as root), unmounted when dropped, and [`fill`]
//! that takes every byte it has left.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fill is written in chunks of this size until ENOSPC.
const FILL_CHUNK: usize = 1 << 20;
/// Bound on one fill (no tmpfs a test mounts is larger than this).
const FILL_CHUNKS_MAX: usize = 4096;
/// The file [`fill`] writes.
pub const FILLER: &str = "filler";

/// A tmpfs mounted at a path, unmounted (lazily) when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
    mib: Cell<u64>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `at`, made if missing; panics with
    /// the reason if this is not root.
    pub fn mount(at: &Path, mib: u64) -> Tmpfs {
        Tmpfs::try_mount(at, mib).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Tmpfs::mount`] that says why it could not.
    pub fn try_mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        fs::create_dir_all(at).map_err(|e| format!("{}: {e}", at.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs needs root: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: at.to_path_buf(),
            mib: Cell::new(mib),
        })
    }

    /// Puts the directory `dir` (of a stopped member) on a tmpfs of its
    /// own at the same path: moved aside, the tmpfs mounted, the contents
    /// copied back with their modes and times, the old copy removed.
    pub fn move_onto(dir: &Path, mib: u64) -> Result<Tmpfs, String> {
        let aside = dir.with_extension("on-disk");
        fs::rename(dir, &aside).map_err(|e| format!("move {} aside: {e}", dir.display()))?;
        let tmpfs = match Tmpfs::try_mount(dir, mib) {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir(dir);
                let _ = fs::rename(&aside, dir);
                return Err(e);
            }
        };
        let cp = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", aside.display()))
            .arg(dir)
            .output()
            .map_err(|e| format!("run cp: {e}"));
        let copied = cp.and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "copy {} onto a tmpfs of {mib} MiB: {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        });
        if let Err(e) = copied {
            // Back as it was: the partial copy goes with the tmpfs.
            drop(tmpfs);
            let _ = fs::remove_dir(dir);
            fs::rename(&aside, dir)
                .map_err(|r| format!("{e}; and moving {} back: {r}", aside.display()))?;
            return Err(e);
        }
        fs::remove_dir_all(&aside).map_err(|e| format!("remove {}: {e}", aside.display()))?;
        Ok(tmpfs)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in MiB.
    pub fn mib(&self) -> u64 {
        self.mib.get()
    }

    /// Grows or shrinks it to `mib` MiB.
    pub fn resize(&self, mib: u64) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .output()
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "resize {} to {mib} MiB: {}",
                self.path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        self.mib.set(mib);
        Ok(())
    }

    /// `df -k` of it, for a report.
    pub fn df(&self) -> String {
        let out = Command::new("df").arg("-k").arg(&self.path).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The bytes of the files under `dir` (what they take on a tmpfs, whose
/// preallocated files are allocated), in MiB rounded up.
pub fn dir_mib(dir: &Path) -> u64 {
    fn bytes(p: &Path) -> u64 {
        let Ok(md) = fs::symlink_metadata(p) else {
            return 0;
        };
        if md.is_dir() {
            fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| bytes(&e.path())).sum())
                .unwrap_or(0)
        } else {
            md.len()
        }
    }
    bytes(dir).div_ceil(1 << 20)
}

/// Fills the filesystem of `dir` with `dir/`[`FILLER`] until ENOSPC: the
/// bytes written.
pub fn fill(dir: &Path) -> Result<u64, String> {
    let path = dir.join(FILLER);
    let mut f = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let chunk = vec![0x5au8; FILL_CHUNK];
    let mut written = 0u64;
    for _ in 0..FILL_CHUNKS_MAX {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(format!("fill {}: {e}", path.display())),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// Frees what [`fill`] took.
pub fn free(dir: &Path) -> Result<(), String> {
    let path = dir.join(FILLER);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", path.display())),
    }
}

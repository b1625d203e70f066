//! Wall-clock jumps of one server under libfaketime (`LD_PRELOAD`): a
//! wrapper script execs the server (same pid) with the preload when its
//! member has a clock file, and the file is rewritten to jump (libfaketime
//! re-reads it every second). The monotonic clock is left alone, as when
//! NTP steps a machine's clock.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// libfaketime: `FERROKV_TEST_LIBFAKETIME`, else Debian's (package
/// `faketime`, which brings `libfaketime`).
pub fn libfaketime() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROKV_TEST_LIBFAKETIME") {
        return PathBuf::from(p);
    }
    let found = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "libfaketime.so.1 not found under /usr/lib/*/faketime/: install Debian's `faketime` \
             (scripts/test does) or set FERROKV_TEST_LIBFAKETIME"
        )
    })
}

/// A wrapper that execs ferrokv (same pid) under libfaketime: the member
/// `--name=<n>` reads its wall-clock offset from `<dir>/clock-<n>` (e.g.
/// `+0`, `+2h`, `-1d`), re-read every second; its monotonic clock is the
/// real one, as when NTP steps a machine's clock.
pub fn faketime_wrapper(dir: &Path, lib: &Path, binary: &Path) -> PathBuf {
    let path = dir.join("ferrokv-faketime");
    let script = format!(
        "#!/bin/sh\n\
         name=\n\
         for a in \"$@\"; do\n\
         \x20 case \"$a\" in --name=*) name=\"${{a#--name=}}\" ;; esac\n\
         done\n\
         clock=\"{dir}/clock-$name\"\n\
         if [ -f \"$clock\" ]; then\n\
         \x20 LD_PRELOAD=\"{lib}\"\n\
         \x20 FAKETIME_TIMESTAMP_FILE=\"$clock\"\n\
         \x20 FAKETIME_CACHE_DURATION=1\n\
         \x20 FAKETIME_DONT_FAKE_MONOTONIC=1\n\
         \x20 export LD_PRELOAD FAKETIME_TIMESTAMP_FILE FAKETIME_CACHE_DURATION FAKETIME_DONT_FAKE_MONOTONIC\n\
         fi\n\
         exec \"{bin}\" \"$@\"\n",
        dir = dir.display(),
        lib = lib.display(),
        bin = binary.display()
    );
    fs::write(&path, script).expect("write wrapper");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    path
}

pub fn set_clock(dir: &Path, member: &str, offset: &str) {
    // Written whole and renamed: libfaketime never reads half a file.
    let tmp = dir.join(format!("clock-{member}.tmp"));
    fs::write(&tmp, format!("{offset}\n")).expect("write clock file");
    fs::rename(&tmp, dir.join(format!("clock-{member}"))).expect("rename clock file");
}

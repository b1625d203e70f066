use std::io;
use std::sync::Arc;

/// The one error type of the WAL crate.
///
/// `Clone` because a failed group-commit batch hands the same error to every
/// waiter of that batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("wal: i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The disk is full: detected while preparing a segment, before any record
    /// of the failed batch was written. The WAL stays usable; retry later.
    #[error("wal: no space left on device")]
    NoSpace,
    /// The log on disk is damaged somewhere other than a torn tail; the server
    /// must refuse to start rather than serve a log with a hole in it.
    #[error("wal: corrupt log in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A write or fdatasync failed earlier; after a failed fsync the page cache
    /// cannot be trusted, so every later append fails until the WAL is reopened.
    #[error("wal: failed after an earlier write/fsync error; reopen to recover: {0}")]
    Failed(String),
    #[error("wal: closed")]
    Closed,
    #[error("wal: record of {len} bytes exceeds the maximum record size")]
    RecordTooLarge { len: usize },
}

impl Error {
    pub(crate) fn io(e: io::Error) -> Error {
        // glommio's errors reach here re-wrapped: the OS code is gone,
        // the kind is kept.
        if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
            Error::NoSpace
        } else {
            Error::Io(Arc::new(e))
        }
    }
}

impl<T> From<glommio::GlommioError<T>> for Error {
    fn from(e: glommio::GlommioError<T>) -> Self {
        Error::io(io::Error::from(e))
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_no_space_however_it_is_wrapped() {
        let raw = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(Error::io(raw), Error::NoSpace));
        let wrapped = io::Error::new(
            io::ErrorKind::StorageFull,
            "Pre-allocate space: os error 28",
        );
        assert!(matches!(Error::io(wrapped), Error::NoSpace));
        let other = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(Error::io(other), Error::Io(_)));
    }
}

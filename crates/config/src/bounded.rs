//! Reading the app's files with a size cap.
//!
//! `--env` and the config paths come from whoever starts the worker, and a path to
//! `/dev/zero`, a FIFO or a multi-gigabyte log would otherwise make `read` grow memory without
//! end (or block forever) before any signal handler runs. So a file must be a regular file no
//! larger than its cap, checked on its metadata before it is opened and enforced while it is read
//! (it may grow in between).

use std::io::Read;
use std::path::Path;

/// The largest `.env` read: real ones are a few kilobytes.
pub(super) const MAX_ENV_BYTES: u64 = 1024 * 1024;

/// The largest config file or configuration cache read: real ones are tens of kilobytes.
pub(super) const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// The largest TLS certificate, chain or key read: a PEM chain is a few kilobytes.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Why a file was not read; rendered as the end of a one-line error.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read (missing, no permission).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The path is not a regular file: what it is instead, e.g. `a directory`.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file is larger than the cap (in bytes), before or while it is read.
    #[error("it is larger than {} MiB, far more than Laravel's files ever are", .0 / (1024 * 1024))]
    TooLarge(u64),
}

impl ReadError {
    /// The I/O error kind, when there is one (a missing file is often not an error).
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Self::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// The bytes of the regular file at `path`, at most `cap` of them.
pub(super) fn read(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    // Metadata first: opening a FIFO would block until a writer appears.
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular(kind_of(&metadata)));
    }
    if metadata.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

/// A TLS certificate, chain or key file the app's config names (PEM), read with the same
/// checks: the Redis and MySQL adapters load them once, when they are built.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, ReadError> {
    read(path, MAX_PEM_BYTES)
}

/// The same, as UTF-8 text (PHP source and `composer` JSON are UTF-8).
pub(super) fn read_text(path: &Path, cap: u64) -> Result<String, ReadError> {
    let bytes = read(path, cap)?;
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

fn kind_of(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_cap() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("small");
        std::fs::write(&file, b"A=1\n").expect("write");
        assert_eq!(read(&file, 4).expect("fits"), b"A=1\n");
        assert!(matches!(read(&file, 3), Err(ReadError::TooLarge(3))));
        assert!(matches!(
            read(dir.path(), 1024),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read(Path::new("/dev/zero"), 1024),
            Err(ReadError::NotRegular("a character device"))
        ));
        let missing = read(&dir.path().join("missing"), 1024).expect_err("missing");
        assert_eq!(missing.kind(), Some(std::io::ErrorKind::NotFound));
    }
}

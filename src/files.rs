//! How jobloop creates and appends to files: new files are 0640 and made
//! with O_CREAT|O_EXCL|O_NOFOLLOW, so a name that exists (a planted symlink
//! included) is never opened or written through.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` as a new file, mode 0640, never through a symlink.
///
/// # Errors
///
/// `AlreadyExists` when the name is taken (by anything, a link included),
/// or the error of the create.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Appends `line` to an existing file, never through a symlink; errors are
/// ignored (the caller logs the same fact in the daemon's own log).
pub fn append_line(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = OpenOptions::new()
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

//! Owner-only files and directories, whatever the process umask.
//!
//! The data directory holds the store (every accepted event), the admin
//! socket and the compiled filter cache, whose files the daemon loads as
//! native code: no other user may read or change any of it. The directory
//! is 0700 (so nothing inside is reachable by others, even for the instant
//! between creating a file and setting its mode) and the files are 0600.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of owner-only directories.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of owner-only files.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) as 0700. An existing directory is
/// left as it is (it may be shared, such as `.` or `/tmp`), with a warning
/// when others may enter it: the files inside are 0600 all the same.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o7777),
                "the directory is open to other users; `chmod 700` it if it is only Hookline's");
        }
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    // The umask can only have removed bits; set exactly 0700.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Creates `file` empty as 0600 if it does not exist, and makes it 0600,
/// before another library opens it with the umask's mode.
pub(crate) fn private_file(file: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(file)?;
    std::fs::set_permissions(file, Permissions::from_mode(FILE_MODE))
}

/// Writes `bytes` to `file` through a temporary file and a rename, 0600.
pub(crate) fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    std::fs::set_permissions(&tmp, Permissions::from_mode(FILE_MODE))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, file)
}

/// Whether `file` is a regular file that only its owner may read or write.
pub(crate) fn is_private_file(file: &Path) -> bool {
    std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o077 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_it_creates_is_owner_only_and_loose_files_are_fixed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // One that existed is not changed (it may be shared).
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o777)).unwrap();
        private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o777);
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o666)).unwrap();
        assert!(!is_private_file(&file));
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "kept its contents");
        write_private(&dir.join("g"), b"y").unwrap();
        assert_eq!(mode(&dir.join("g")), 0o600);
        assert!(is_private_file(&dir.join("g")));
    }
}

//! Modes of what only shoald may read: the raft log, snapshot and hard state hold the
//! cluster's CA key and join tokens, and the state dir holds the node's TLS key. Such
//! files are made 0600 in 0700 directories, and at start-up anything left looser (by an
//! older shoal, which used the umask's 0644 and 0755, or by a restored backup) is narrowed,
//! with a log line naming it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Directories holding keys.
pub const DIR_MODE: u32 = 0o700;
/// Files holding keys.
pub const FILE_MODE: u32 = 0o600;

/// Makes `dir` 0700 (its missing parents get the usual mode, being shared), or narrows it
/// to 0700 if it exists with more.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            restrict(dir, DIR_MODE).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Narrows `path` to `mode` if it allows anything more (a group or other bit, say); true
/// when it did. A missing path is left alone.
pub fn restrict(path: &Path, mode: u32) -> io::Result<bool> {
    let current = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if current & !mode == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    tracing::warn!(
        path = %path.display(),
        was = format!("{current:04o}"),
        now = format!("{mode:04o}"),
        "narrowed the permissions of a path that holds keys"
    );
    Ok(true)
}

/// Narrows `dir` to 0700 and each file directly in it to 0600; the paths narrowed.
pub fn restrict_dir_and_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut narrowed = Vec::new();
    if restrict(dir, DIR_MODE)? {
        narrowed.push(dir.to_path_buf());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(narrowed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // Not through symlinks: what one points at is someone else's to secure.
        if entry.file_type()?.is_file() && restrict(&entry.path(), FILE_MODE)? {
            narrowed.push(entry.path());
        }
    }
    Ok(narrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn dirs_are_made_private_and_loose_ones_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("key"), "k").unwrap();
        std::fs::set_permissions(dir.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.join("tight"), "t").unwrap();
        std::fs::set_permissions(dir.join("tight"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        let narrowed = restrict_dir_and_files(&dir).unwrap();
        assert_eq!(narrowed, [dir.clone(), dir.join("key")]);
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&dir.join("key")), FILE_MODE);
        assert_eq!(
            mode(&dir.join("tight")),
            0o400,
            "tighter than asked is kept"
        );
        assert!(restrict_dir_and_files(&dir).unwrap().is_empty());
        assert!(!restrict(&tmp.path().join("missing"), FILE_MODE).unwrap());
    }
}

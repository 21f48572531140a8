//! Files in `server.data_dir`: what edgegw creates there is for its owner only (files 0600,
//! directories 0700), whatever the umask; an existing file or directory that group or
//! others may access is reported at start ([`loose_modes`], [`warn_loose_modes`]) and left
//! as it is (an operator may have opened it on purpose, e.g. for a backup agent's group;
//! a silent `chmod` would undo that without a word). And [`is_storage_full`]: whether an
//! I/O error means the file system is full (ENOSPC, or a quota: EDQUOT), which the admin
//! API answers with 507 `InsufficientStorage`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The mode of every file edgegw creates in the data directory.
pub const FILE_MODE: u32 = 0o600;
/// The mode of the data directory and of every directory edgegw creates in it.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parent with mode 0700. Directories that exist already
/// keep their mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create a missing file with mode 0600 (add `write`, `create`, ...).
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Opens `path` for reading and writing, creating it empty with mode 0600 if it does not
/// exist (an existing file is neither truncated nor changed).
pub fn open_private_rw(path: &Path) -> io::Result<File> {
    private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Creates `path` empty with mode 0600 if it does not exist; an existing file is left as
/// it is. For a file another part of edgegw opens with default options later (the access
/// log), so that it is never created with the umask's mode.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    private_options()
        .append(true)
        .create(true)
        .open(path)
        .map(drop)
}

/// Whether `e` says the file system is full (ENOSPC) or the owner's quota is used up
/// (EDQUOT): the write can succeed once space is freed.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// How deep [`loose_modes`] looks below the data directory (edgegw makes no
/// subdirectories; an operator's own are looked at this far).
const MAX_DEPTH: usize = 4;

/// The data directory itself and everything below it that group or others may access
/// (any of the mode bits 0o077), with its mode (the permission bits, e.g. `0o644`).
/// Symbolic links are not followed (their own mode means nothing). Unreadable entries
/// are skipped; a missing `data_dir` has none.
pub fn loose_modes(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![(data_dir.to_path_buf(), 0usize)];
    while let Some((path, depth)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            found.push((path.clone(), mode));
        }
        if meta.is_dir() && depth < MAX_DEPTH {
            if let Ok(entries) = std::fs::read_dir(&path) {
                let mut children: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                // Popped in order: the listing reads top-down, sorted.
                stack.extend(children.into_iter().rev().map(|p| (p, depth + 1)));
            }
        }
    }
    found
}

/// Logs one warning per entry of [`loose_modes`], naming the path and its mode. Returns
/// how many there were.
pub fn warn_loose_modes(data_dir: &Path) -> usize {
    let loose = loose_modes(data_dir);
    for (path, mode) in &loose {
        let wanted = if path.is_dir() { DIR_MODE } else { FILE_MODE };
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "{} in the data directory is accessible to group or others (mode {mode:04o}): edgegw creates its files {FILE_MODE:04o} and directories {DIR_MODE:04o} and does not change an existing mode; chmod {wanted:o} it unless that is intended",
            path.display(),
        );
    }
    loose.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_private_whatever_the_umask_and_existing_ones_kept() {
        let dir = testkit::temp_dir("files").unwrap();
        let data = dir.path().join("a").join("data");
        create_private_dir_all(&data).unwrap();
        assert_eq!(mode(&data), DIR_MODE);
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE, "missing parents too");
        // An existing directory keeps its mode.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_private_dir_all(&data).unwrap();
        assert_eq!(mode(&data), 0o750);

        let f = data.join("f");
        ensure_private_file(&f).unwrap();
        assert_eq!(mode(&f), FILE_MODE);
        std::fs::write(&f, b"kept").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        ensure_private_file(&f).unwrap();
        open_private_rw(&f).unwrap();
        assert_eq!(mode(&f), 0o640, "an existing file's mode is not changed");
        assert_eq!(std::fs::read(&f).unwrap(), b"kept", "nor its content");
        let g = data.join("g");
        open_private_rw(&g).unwrap();
        assert_eq!(mode(&g), FILE_MODE);
    }

    #[test]
    fn loose_modes_names_every_open_entry_and_nothing_private() {
        let dir = testkit::temp_dir("files-loose").unwrap();
        let data = dir.path().join("data");
        create_private_dir_all(&data.join("sub")).unwrap();
        for name in ["a.key", "b.redb", "sub/c"] {
            ensure_private_file(&data.join(name)).unwrap();
        }
        assert_eq!(loose_modes(&data), vec![]);
        assert_eq!(warn_loose_modes(&data), 0);
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&data, 0o755);
        set(&data.join("b.redb"), 0o644);
        set(&data.join("sub/c"), 0o660);
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        assert_eq!(
            loose_modes(&data),
            vec![
                (data.clone(), 0o755),
                (data.join("b.redb"), 0o644),
                (data.join("sub/c"), 0o660),
            ]
        );
        assert_eq!(warn_loose_modes(&data), 3);
        assert_eq!(loose_modes(&dir.path().join("missing")), vec![]);
    }

    #[test]
    fn storage_full_is_enospc_or_a_quota() {
        assert!(is_storage_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_storage_full(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(is_storage_full(&io::Error::from(
            io::ErrorKind::StorageFull
        )));
        assert!(!is_storage_full(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_storage_full(&io::Error::from(io::ErrorKind::NotFound)));
    }
}

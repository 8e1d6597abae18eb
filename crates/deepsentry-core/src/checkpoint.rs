//! Small state files written so that a crash at any moment leaves either the old or the new
//! version on disk, never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes `contents` to `path` atomically: a temporary file in the same directory (created
/// anew with mode 0600, never through a symlink), flushed, the previous version renamed to
/// `<path>.bak`, then the new one renamed into place. With `durable`, the data and the
/// directory are fsynced so it also survives a power loss (used at shutdown; a process crash
/// needs no fsync). A crash between the two renames leaves the backup, which
/// [`load_json`] falls back to.
pub fn write_atomic(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = sibling(path, "tmp");
    // A planted symlink in its place is removed, not followed.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => fs::rename(path, sibling(path, "bak"))?,
        _ => {}
    }
    fs::rename(&tmp, path)?;
    if durable {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `<path>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Reads a JSON state file; `Ok(None)` if neither it nor its backup exists. A file that is
/// missing, empty or corrupt while its backup (the version before, see [`write_atomic`]) is
/// good gives the backup, with a log line: resuming a little earlier re-reads a few lines,
/// stopping would read none.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let read = |path: &Path| -> anyhow::Result<Option<T>> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a valid state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    };
    let backup = sibling(path, "bak");
    match read(path) {
        Ok(Some(value)) => Ok(Some(value)),
        Ok(None) => read(&backup),
        Err(e) => match read(&backup) {
            Ok(Some(value)) => {
                tracing::error!(
                    "{e:#}; starting from its backup {} (the version before it)",
                    backup.display()
                );
                Ok(Some(value))
            }
            _ => Err(e),
        },
    }
}

/// Writes a JSON state file atomically (see [`write_atomic`]).
pub fn save_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes, durable).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `dir` (mode 0700) for state files if needed, and refuses one that another user
/// owns or that every user may write into: they could replace the state, or plant links that
/// a write would follow. (Group write is allowed: volume mounts with a shared group, such as
/// Kubernetes' `fsGroup`, set it.)
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the state directory {} (set `data_dir` to a writable place)",
                dir.display()
            )
        })?;
    let meta = fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(
        meta.uid() == me,
        "the state directory {} belongs to user {}, not to this user ({me}); use a `data_dir` \
         of your own",
        dir.display(),
        meta.uid()
    );
    anyhow::ensure!(
        meta.permissions().mode() & 0o002 == 0,
        "the state directory {} may be written by any user (mode {:o}); `chmod o-w` it or \
         use another `data_dir`",
        dir.display(),
        meta.permissions().mode() & 0o777
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/checkpoints.json");
        assert!(load_json::<BTreeMap<String, u64>>(&path).unwrap().is_none());
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), 42u64);
        save_json(&path, &map, true).unwrap();
        assert_eq!(
            load_json::<BTreeMap<String, u64>>(&path).unwrap(),
            Some(map)
        );
        assert!(!dir.path().join("sub/checkpoints.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_falls_back_to_the_version_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save_json(&path, &1u64, false).unwrap();
        save_json(&path, &2u64, false).unwrap();
        std::fs::write(&path, b"").unwrap(); // a disk that filled up mid-write
        assert_eq!(load_json::<u64>(&path).unwrap(), Some(1));
        std::fs::write(dir.path().join("state.json.bak"), b"{").unwrap();
        assert!(
            load_json::<u64>(&path).is_err(),
            "both bad: said, not guessed"
        );
    }

    #[test]
    fn a_planted_symlink_is_not_followed_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        save_json(&path, &7u64, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        private_dir(&state).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = private_dir(&state).unwrap_err().to_string();
        assert!(error.contains("may be written by any user"), "{error}");
    }
}

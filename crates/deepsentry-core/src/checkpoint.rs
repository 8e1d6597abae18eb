//! Small state files written so that a crash at any moment leaves either the old or the new
//! version on disk, never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed,
/// then renamed over the old one. With `durable`, the data is fsynced before the rename so it
/// also survives a power loss (used at shutdown; a process crash needs no fsync).
pub fn write_atomic(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
    }
    fs::rename(&tmp, path)
}

/// Reads a JSON state file; `Ok(None)` if it does not exist.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a valid checkpoint file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a JSON state file atomically (see [`write_atomic`]).
pub fn save_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes, durable).with_context(|| format!("cannot write {}", path.display()))
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
}

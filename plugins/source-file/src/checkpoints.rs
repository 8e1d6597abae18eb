//! The per-file read positions of a `file` source, persisted in its data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deepsentry_core::checkpoint::{load_json, save_json};
use serde::{Deserialize, Serialize};

/// Where reading of one file resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// The path the file had when last read (informational; identity is the key).
    pub path: PathBuf,
    /// Byte offset just past the last delivered line.
    pub offset: u64,
    /// How many leading bytes `head_hash` covers.
    pub head_len: u64,
    /// FNV-1a hash of the file's first `head_len` bytes, to tell a recycled inode apart.
    pub head_hash: u64,
}

/// A change to the checkpoints, applied once the batch it rode with is acknowledged.
#[derive(Debug, Clone)]
pub enum CheckpointUpdate {
    /// Lines up to `entry.offset` of the file `key` are done.
    Advance {
        /// `device:inode`.
        key: String,
        /// The new position.
        entry: CheckpointEntry,
        /// How many lines the batch held (for messages).
        lines: u64,
    },
    /// The file `key` is gone for good (rotated away and finished, or deleted).
    Forget {
        /// `device:inode`.
        key: String,
        /// Its last path.
        path: PathBuf,
    },
}

impl CheckpointUpdate {
    /// Lines in the batch this update rode with.
    pub fn lines(&self) -> u64 {
        match self {
            CheckpointUpdate::Advance { lines, .. } => *lines,
            CheckpointUpdate::Forget { .. } => 0,
        }
    }

    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            CheckpointUpdate::Advance { entry, .. } => &entry.path,
            CheckpointUpdate::Forget { path, .. } => path,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: BTreeMap<String, CheckpointEntry>,
}

const FORMAT_VERSION: u32 = 1;

/// The checkpoints of one source and the file they live in.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    files: BTreeMap<String, CheckpointEntry>,
    dirty: bool,
}

impl Checkpoints {
    /// Loads `path`, or starts empty if it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let files = match load_json::<CheckpointFile>(path)? {
            Some(file) if file.version == FORMAT_VERSION => file.files,
            Some(file) => anyhow::bail!(
                "{} has checkpoint format version {}, this build reads version {FORMAT_VERSION}",
                path.display(),
                file.version
            ),
            None => BTreeMap::new(),
        };
        Ok(Self {
            path: path.to_path_buf(),
            files,
            dirty: false,
        })
    }

    /// A copy of every entry, for the reader to resume from.
    pub fn snapshot(&self) -> BTreeMap<String, CheckpointEntry> {
        self.files.clone()
    }

    /// Applies an acknowledged update.
    pub fn apply(&mut self, update: CheckpointUpdate) {
        match update {
            CheckpointUpdate::Advance { key, entry, .. } => {
                self.files.insert(key, entry);
            }
            CheckpointUpdate::Forget { key, .. } => {
                self.files.remove(&key);
            }
        }
        self.dirty = true;
    }

    /// Writes the file if anything changed; `durable` also fsyncs it.
    pub fn save(&mut self, durable: bool) -> anyhow::Result<()> {
        if !self.dirty && !durable {
            return Ok(());
        }
        let file = CheckpointFile {
            version: FORMAT_VERSION,
            files: self.files.clone(),
        };
        save_json(&self.path, &file, durable)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64) -> CheckpointEntry {
        CheckpointEntry {
            path: "/var/log/a.log".into(),
            offset,
            head_len: 0,
            head_hash: 0,
        }
    }

    #[test]
    fn advance_forget_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let mut checkpoints = Checkpoints::load(&path).unwrap();
        checkpoints.apply(CheckpointUpdate::Advance {
            key: "1:2".into(),
            entry: entry(10),
            lines: 1,
        });
        checkpoints.apply(CheckpointUpdate::Advance {
            key: "1:3".into(),
            entry: entry(20),
            lines: 1,
        });
        checkpoints.apply(CheckpointUpdate::Forget {
            key: "1:3".into(),
            path: "/x".into(),
        });
        checkpoints.save(false).unwrap();
        let reloaded = Checkpoints::load(&path).unwrap().snapshot();
        assert_eq!(reloaded.len(), 1);
        assert_eq!(reloaded["1:2"].offset, 10);
    }
}

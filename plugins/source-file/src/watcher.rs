//! The reading side of the `file` source: discovers files, reads them in large chunks, notices
//! rotation and truncation. Runs on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deepsentry_core::ack::AckRegistrar;
use deepsentry_core::framing::LineFramer;
use deepsentry_core::hash::fnv1a;
use deepsentry_core::lines::{LineDecoder, LineSettings};
use deepsentry_core::metrics::ComponentMetrics;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{Batch, Event, Origin, Output, ShutdownSignal, MAX_BATCH_EVENTS};

use crate::checkpoints::{CheckpointEntry, CheckpointUpdate};
use crate::ReadFrom;

/// How many leading bytes identify a file's content next to its inode.
const HEAD_BYTES: u64 = 256;
/// How many bytes one file may be read in a row before the others get a turn.
const FAIR_SHARE_BYTES: u64 = 16 * 1024 * 1024;

/// What the reader needs from the source config.
#[derive(Debug)]
pub struct WatcherSettings {
    pub source_id: String,
    pub patterns: Vec<glob::Pattern>,
    pub excludes: Vec<glob::Pattern>,
    pub read_from: ReadFrom,
    pub lines: LineSettings,
    pub poll_interval: Duration,
    pub glob_interval: Duration,
    pub rotate_wait: Duration,
    pub exit_on_eof: bool,
}

fn file_key(meta: &std::fs::Metadata) -> String {
    format!("{}:{}", meta.dev(), meta.ino())
}

fn head(file: &mut File, len: u64) -> std::io::Result<(u64, u64)> {
    let mut buf = vec![0; len.min(HEAD_BYTES) as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut buf)?;
    // FNV-1a: the same on every build (the checkpoint file outlives the binary).
    Ok((buf.len() as u64, fnv1a(&buf, 0)))
}

/// The file `key` (device and inode) under another name in `path`'s directory, if there is
/// one: where a rotation moved it.
fn renamed_in_place(path: &Path, key: &str) -> Option<PathBuf> {
    std::fs::read_dir(path.parent()?)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && file_key(&m) == key)
        })
}

/// One open file being read.
struct TailedFile {
    path: PathBuf,
    key: String,
    file: File,
    /// Bytes read from the file so far (its read position).
    pos: u64,
    head_len: u64,
    head_hash: u64,
    framer: LineFramer,
    decoder: LineDecoder,
    /// When the path stopped pointing at this file (renamed or deleted away).
    rotated_at: Option<Instant>,
    /// When this watcher last read nothing.
    idle_since: Option<Instant>,
    /// When the file was last checked for a truncation or a rewrite in place.
    checked_at: Option<Instant>,
}

/// Discovers and reads the files; see the module docs.
pub struct FileWatcher {
    settings: WatcherSettings,
    resume: BTreeMap<String, CheckpointEntry>,
    registrar: AckRegistrar<CheckpointUpdate>,
    out: Output,
    shutdown: ShutdownSignal,
    metrics: ComponentMetrics,
    files: Vec<TailedFile>,
    /// Paths that failed to open, so the failure is logged once rather than every scan.
    unreadable: BTreeSet<PathBuf>,
    /// A file that keeps failing to read is said every 10 s, not on every attempt.
    read_errors: LogRateLimit,
    /// No checkpoint at start: the first run, where `read_from: end` applies.
    first_run: bool,
}

/// The output has no consumer left.
struct Closed;

impl FileWatcher {
    pub fn new(
        settings: WatcherSettings,
        resume: BTreeMap<String, CheckpointEntry>,
        registrar: AckRegistrar<CheckpointUpdate>,
        out: Output,
        shutdown: ShutdownSignal,
        metrics: ComponentMetrics,
    ) -> Self {
        Self {
            settings,
            first_run: resume.is_empty(),
            resume,
            registrar,
            out,
            shutdown,
            metrics,
            files: Vec::new(),
            unreadable: BTreeSet::new(),
            read_errors: LogRateLimit::new(Duration::from_secs(10)),
        }
    }

    /// Reads until shutdown, until every consumer is gone, or (with `exit_on_eof`) until every
    /// file is read to its end.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut last_scan: Option<Instant> = None;
        let mut first_scan = true;
        while !self.shutdown.is_triggered() {
            if last_scan.is_none_or(|t| t.elapsed() >= self.settings.glob_interval) {
                self.scan(first_scan);
                if first_scan {
                    self.forget_vanished();
                    first_scan = false;
                }
                last_scan = Some(Instant::now());
            }
            let mut progressed = false;
            for i in 0..self.files.len() {
                match self.read_watcher(i) {
                    Ok(read) => progressed |= read,
                    Err(Closed) => return Ok(()),
                }
            }
            if progressed {
                continue;
            }
            if self.settings.exit_on_eof {
                return self.finish_all().or(Ok(()));
            }
            if self.check_files() {
                last_scan = None;
                continue;
            }
            std::thread::sleep(self.settings.poll_interval);
        }
        Ok(())
    }

    fn excluded(&self, path: &Path) -> bool {
        self.settings.excludes.iter().any(|p| p.matches_path(path))
    }

    /// Expands the patterns and opens files not yet watched.
    fn scan(&mut self, at_startup: bool) {
        let mut paths = Vec::new();
        for pattern in &self.settings.patterns {
            match glob::glob(pattern.as_str()) {
                Ok(found) => paths.extend(found.flatten()),
                Err(e) => tracing::warn!(pattern = %pattern, "bad pattern: {e}"),
            }
        }
        for path in paths {
            if self.excluded(&path) {
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => meta,
                _ => continue,
            };
            let key = file_key(&meta);
            if self.files.iter().any(|w| w.key == key) {
                continue;
            }
            match self.open(&path, key, meta.len(), at_startup) {
                Ok(watcher) => {
                    self.unreadable.remove(&path);
                    tracing::info!(
                        source = %self.settings.source_id,
                        file = %path.display(),
                        offset = watcher.pos,
                        "watching file"
                    );
                    self.files.push(watcher);
                }
                Err(e) => {
                    if self.unreadable.insert(path.clone()) {
                        tracing::warn!(
                            source = %self.settings.source_id,
                            file = %path.display(),
                            "cannot open: {e}"
                        );
                    }
                }
            }
        }
    }

    fn open(
        &mut self,
        path: &Path,
        key: String,
        len: u64,
        at_startup: bool,
    ) -> std::io::Result<TailedFile> {
        let mut file = File::open(path)?;
        let (head_len, head_hash) = head(&mut file, len)?;
        let start = match self.resume.remove(&key) {
            Some(cp)
                if cp.offset <= len
                    && cp.head_len <= head_len
                    && head(&mut file, cp.head_len)?.1 == cp.head_hash =>
            {
                cp.offset
            }
            Some(_) => {
                tracing::info!(
                    source = %self.settings.source_id,
                    file = %path.display(),
                    "checkpoint does not match the file (truncated or replaced); reading from the start"
                );
                0
            }
            // Only on a first run do files start at their end: once the source has run, a
            // file it does not know appeared since (a rotation while it was down) and is
            // read whole.
            None if at_startup && self.first_run && self.settings.read_from == ReadFrom::End => len,
            None => 0,
        };
        file.seek(SeekFrom::Start(start))?;
        let origin = Origin::new(
            self.settings.source_id.as_str(),
            path.to_string_lossy().as_ref(),
        );
        Ok(TailedFile {
            path: path.to_path_buf(),
            key,
            file,
            pos: start,
            head_len,
            head_hash,
            framer: LineFramer::at_offset(self.settings.lines.max_line_bytes, start),
            decoder: LineDecoder::new(origin, &self.metrics, &self.settings.lines),
            rotated_at: None,
            idle_since: None,
            checked_at: None,
        })
    }

    /// The path the patterns match that names the file `key` now, if any (a file renamed
    /// within the patterns, `app.log` to `app.log.1` under `app.log*`).
    fn matched_path_of(&self, key: &str) -> Option<PathBuf> {
        self.settings
            .patterns
            .iter()
            .filter_map(|pattern| glob::glob(pattern.as_str()).ok())
            .flat_map(|found| found.flatten())
            .filter(|path| !self.excluded(path))
            .find(|path| std::fs::metadata(path).is_ok_and(|m| file_key(&m) == key))
    }

    /// Whether watcher `i`'s file, still at its path, was truncated or rewritten in place
    /// (its first bytes changed); if so it is read again from the start.
    fn restart_if_rewritten(&mut self, i: usize, len: u64) -> bool {
        let w = &mut self.files[i];
        w.checked_at = Some(Instant::now());
        let why = if len < w.pos {
            "file was truncated"
        } else if w.head_len > 0
            && head(&mut w.file, w.head_len).is_ok_and(|(_, hash)| hash != w.head_hash)
        {
            "file was rewritten in place (its first bytes changed)"
        } else {
            let _ = w.file.seek(SeekFrom::Start(w.pos));
            return false;
        };
        tracing::warn!(
            source = %self.settings.source_id,
            file = %w.path.display(),
            "{why}; reading it again from the start"
        );
        self.metrics.counter("files_truncated").inc();
        // A multiline event being joined is complete as far as the old content goes.
        let mut open = Vec::new();
        if w.decoder.finish_open(&mut open) > 0 {
            let _ = self.send(i, open);
        }
        let w = &mut self.files[i];
        let _ = w.file.seek(SeekFrom::Start(0));
        w.pos = 0;
        w.head_len = 0;
        w.framer = LineFramer::new(self.settings.lines.max_line_bytes);
        true
    }

    /// Checkpoints of files the patterns no longer match at start-up: a file rotated away
    /// while DeepSentry was stopped (renamed in its directory) is finished from its
    /// checkpoint, like a rotation seen live; the others are dropped.
    fn forget_vanished(&mut self) {
        for (key, entry) in std::mem::take(&mut self.resume) {
            if let Some(renamed) = renamed_in_place(&entry.path, &key) {
                let len = std::fs::metadata(&renamed).map_or(0, |m| m.len());
                self.resume.insert(key.clone(), entry.clone());
                if let Ok(mut watcher) = self.open(&renamed, key.clone(), len, false) {
                    tracing::info!(
                        source = %self.settings.source_id,
                        file = %entry.path.display(),
                        now = %renamed.display(),
                        offset = watcher.pos,
                        "file was rotated while stopped; finishing it from its checkpoint"
                    );
                    watcher.rotated_at = Some(Instant::now());
                    self.files.push(watcher);
                    continue;
                }
                self.resume.remove(&key);
            }
            // Nothing to deliver: settled at once.
            self.registrar
                .register(CheckpointUpdate::Forget {
                    key,
                    path: entry.path,
                })
                .done();
        }
    }

    /// Sends a batch of `w`'s lines with a checkpoint update riding along.
    fn send(&mut self, i: usize, events: Vec<Event>) -> Result<(), Closed> {
        let w = &mut self.files[i];
        // The head hash can only grow up to HEAD_BYTES; refresh it while the file is young.
        if w.head_len < HEAD_BYTES && w.pos > w.head_len {
            if let Ok(h) = head(&mut w.file, w.pos) {
                (w.head_len, w.head_hash) = h;
            }
            let _ = w.file.seek(SeekFrom::Start(w.pos));
        }
        let update = CheckpointUpdate::Advance {
            key: w.key.clone(),
            entry: CheckpointEntry {
                path: w.path.clone(),
                // Not past a multiline event still being joined: its lines are not sent yet,
                // so a restart reads them again.
                offset: w
                    .decoder
                    .open_event_start()
                    .unwrap_or(w.pos - w.framer.buffered() as u64),
                head_len: w.head_len,
                head_hash: w.head_hash,
            },
            lines: events.len() as u64,
        };
        let token = self.registrar.register(update);
        self.out
            .blocking_send(Batch::with_ack(events, token))
            .map_err(|_| Closed)
    }

    /// Reads what watcher `i` has, up to a fair share; returns whether anything was read.
    fn read_watcher(&mut self, i: usize) -> Result<bool, Closed> {
        let mut events = Vec::with_capacity(MAX_BATCH_EVENTS);
        let mut read_total = 0u64;
        loop {
            let w = &mut self.files[i];
            let n = match w.framer.read_from(&mut w.file) {
                Ok(n) => n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let Some(held_back) = self.read_errors.check() {
                        tracing::warn!(
                            file = %w.path.display(),
                            earlier_warnings_not_logged = held_back,
                            "read failed: {e}"
                        );
                    }
                    0
                }
            };
            w.pos += n;
            read_total += n;
            loop {
                let w = &mut self.files[i];
                let room = MAX_BATCH_EVENTS.saturating_sub(events.len());
                let added = w.decoder.drain(&mut w.framer, &mut events, room, false);
                if events.len() >= MAX_BATCH_EVENTS {
                    let full = std::mem::replace(&mut events, Vec::with_capacity(MAX_BATCH_EVENTS));
                    self.send(i, full)?;
                } else if added < room {
                    break;
                }
            }
            if n == 0 || read_total >= FAIR_SHARE_BYTES || self.shutdown.is_triggered() {
                break;
            }
        }
        let w = &mut self.files[i];
        w.decoder.flush_expired(Instant::now(), &mut events);
        if !events.is_empty() {
            self.send(i, events)?;
        }
        let w = &mut self.files[i];
        if read_total > 0 {
            w.idle_since = None;
        } else if w.idle_since.is_none() {
            w.idle_since = Some(Instant::now());
        }
        // At its end, each file is checked for a rewrite on every poll, however busy the
        // others are.
        let due = w
            .checked_at
            .is_none_or(|t| t.elapsed() >= self.settings.poll_interval);
        if read_total == 0 && due && w.rotated_at.is_none() {
            let meta = std::fs::metadata(&w.path).ok();
            if let Some(meta) = meta.filter(|m| file_key(m) == w.key) {
                if self.restart_if_rewritten(i, meta.len()) {
                    return Ok(true);
                }
            }
        }
        Ok(read_total > 0)
    }

    /// At end of every file: notices truncation, rotation and deletion, and closes rotated
    /// files that stayed quiet for `rotate_wait`. Returns whether a rescan is due (a rotated
    /// path probably holds a new file).
    fn check_files(&mut self) -> bool {
        let mut rescan = false;
        let mut i = 0;
        while i < self.files.len() {
            let w = &mut self.files[i];
            let current = std::fs::metadata(&w.path).ok();
            let same_file = current.as_ref().is_some_and(|m| file_key(m) == w.key);
            if same_file && w.rotated_at.is_none() {
                let len = current.as_ref().map_or(0, |m| m.len());
                rescan |= self.restart_if_rewritten(i, len);
                i += 1;
                continue;
            }
            let rotated = w.rotated_at.is_some();
            if !rotated {
                // Renamed to a name the patterns match: the same file, followed at its
                // position (its checkpoint is keyed by device and inode, not by name).
                let key = w.key.clone();
                if let Some(renamed) = self.matched_path_of(&key) {
                    let w = &mut self.files[i];
                    tracing::info!(
                        source = %self.settings.source_id,
                        file = %w.path.display(),
                        now = %renamed.display(),
                        "file was renamed; following it"
                    );
                    let origin = Origin::new(
                        self.settings.source_id.as_str(),
                        renamed.to_string_lossy().as_ref(),
                    );
                    w.decoder.set_origin(origin);
                    w.path = renamed;
                    rescan = true;
                    i += 1;
                    continue;
                }
                let w = &mut self.files[i];
                w.rotated_at = Some(Instant::now());
                rescan = true;
                tracing::info!(
                    source = %self.settings.source_id,
                    file = %w.path.display(),
                    "file was rotated or deleted; finishing the old one"
                );
            }
            let w = &mut self.files[i];
            let quiet = w
                .idle_since
                .is_some_and(|t| t.elapsed() >= self.settings.rotate_wait);
            let waited = w
                .rotated_at
                .is_some_and(|t| t.elapsed() >= self.settings.rotate_wait);
            if quiet && waited {
                // Done with the old file: send its unterminated last line, if any, then forget it.
                let mut events = Vec::new();
                w.decoder
                    .drain(&mut w.framer, &mut events, usize::MAX, true);
                if !events.is_empty() && self.send(i, events).is_err() {
                    return false;
                }
                let w = self.files.remove(i);
                self.registrar
                    .register(CheckpointUpdate::Forget {
                        key: w.key,
                        path: w.path,
                    })
                    .done();
                continue;
            }
            i += 1;
        }
        rescan
    }

    /// `exit_on_eof`: every file is at its end; send the unterminated last lines too.
    fn finish_all(&mut self) -> Result<(), Closed> {
        for i in 0..self.files.len() {
            let mut events = Vec::new();
            let w = &mut self.files[i];
            w.decoder
                .drain(&mut w.framer, &mut events, usize::MAX, true);
            if !events.is_empty() {
                self.send(i, events)?;
            }
        }
        tracing::info!(
            source = %self.settings.source_id,
            files = self.files.len(),
            "every file read to its end (exit_on_eof)"
        );
        Ok(())
    }
}

//! Durable raft storage: raft-rs's [`Storage`](::raft::Storage) on plain files in one directory.
//!
//! # On-disk format
//!
//! Every file is a sequence of frames `[u32 LE payload length][u32 LE crc32 of payload][payload]`
//! whose payloads are raft protobuf messages.
//!
//! - `log`: one frame per [`Entry`], indexes contiguous, starting right after the snapshot.
//!   Appends are fsync'd before they return; a conflicting append first truncates the file at
//!   the first replaced entry (and fsyncs) before writing.
//! - `hardstate`: two frames, the [`HardState`] then the [`ConfState`] applied last.
//! - `snapshot`: one frame, the [`Snapshot`]: metadata (index, term, conf state) and the state
//!   machine's data. Absent until bootstrap, the first compaction or an installed snapshot.
//!
//! Every file is 0600 in a 0700 directory (the snapshot and log hold the cluster's CA key and
//! join tokens); a looser mode found on open is narrowed, with a warning.
//!
//! `hardstate` and `snapshot` are replaced atomically: written to `<name>.tmp`, fsync'd, renamed
//! over the old file, then the directory is fsync'd. Compaction writes the new snapshot first,
//! then rewrites the log with the remaining entries the same way (`log.tmp`), so a crash in
//! between leaves a snapshot plus a log that still holds entries the snapshot covers.
//!
//! # Recovery on open
//!
//! - Leftover `*.tmp` files are unfinished writes and are deleted.
//! - A bad `hardstate` or `snapshot` (checksum, truncation, undecodable) is
//!   [`StorageError::Corrupt`]: it is never replaced by defaults.
//! - A snapshot newer than the hard state's commit (crash while installing it) raises the commit
//!   to the snapshot index and brings the snapshot's conf state.
//! - A bad last frame in `log` (short header, short payload, checksum mismatch) with no intact
//!   frame after it is an append that never completed. Appends are fsync'd before they are
//!   acknowledged, so it was never acknowledged: the file is truncated to the last good frame
//!   with a warning naming the file and offset.
//! - A bad frame followed by an intact one is damage inside acknowledged data:
//!   [`StorageError::Corrupt`] naming the offset. So is a gap in the indexes or an intact frame
//!   that does not decode. (A crash in the middle of a multi-page append whose pages reached the
//!   disk out of order looks the same; refusing is the safe reading.)
//! - Entries at or below the snapshot index are dropped and the log rewritten (a compaction that
//!   crashed before its log rewrite). If the entry at the snapshot index has another term, the
//!   log diverged from the snapshot and all of it is dropped.
//! - If the log then ends below the commit index, committed entries were lost:
//!   [`StorageError::LostCommitted`], and nothing on disk is changed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::raft::prelude::{ConfState, Entry, HardState, Snapshot};
use ::raft::{GetEntriesContext, RaftState};
use protobuf::Message;
use tracing::{info, warn};

const LOG: &str = "log";
const HARD_STATE: &str = "hardstate";
const SNAPSHOT: &str = "snapshot";
/// Length and checksum, both u32 LE.
const FRAME_HEADER: usize = 8;

/// Why the raft state on disk could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft storage: cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "raft storage: {path} is corrupt at byte {offset}: {reason}. Restore this manager's state \
         directory from a backup, or remove the manager from the swarm and re-join it"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "raft storage: {path} ends at index {last_index} but entries up to {commit} were \
         committed: the disk or filesystem lost writes that had been synced. Refusing to start, \
         because this manager could help overwrite committed cluster state. Restore its state \
         directory from a backup, or remove the manager from the swarm (from a healthy manager) \
         and re-join it with an empty state directory"
    )]
    LostCommitted {
        path: PathBuf,
        last_index: u64,
        commit: u64,
    },
    #[error("raft storage: cannot encode the {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("raft storage: the {what} is {len} bytes, more than a frame holds (4 GiB)")]
    TooLarge { what: &'static str, len: usize },
    #[error("raft storage: {path} is already initialized; only a fresh node can bootstrap")]
    AlreadyInitialized { path: PathBuf },
    #[error(
        "raft storage: cannot append at index {index}: the log holds {first_index}..={last_index} \
         and an append must start inside it or right after it"
    )]
    AppendOutOfRange {
        index: u64,
        first_index: u64,
        last_index: u64,
    },
    #[error("raft storage: appended entries are not contiguous: {index} is followed by {next}")]
    AppendNotContiguous { index: u64, next: u64 },
    #[error("raft storage: snapshot at index {index} is older than the log start {first_index}")]
    SnapshotOutOfDate { index: u64, first_index: u64 },
    #[error("raft storage: cannot compact to index {index}: the log ends at {last_index}")]
    CompactBeyondLog { index: u64, last_index: u64 },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Raft log, hard state and snapshot kept in a directory. Clones share the same state.
/// Index and term of the bootstrap snapshot of a new cluster.
pub const BOOTSTRAP_INDEX: u64 = 1;

#[derive(Clone)]
pub struct DiskStorage {
    inner: Arc<RwLock<Inner>>,
}

struct Inner {
    dir: PathBuf,
    log: File,
    log_len: u64,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
    /// File offset of each entry's frame.
    offsets: Vec<u64>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
}

impl DiskStorage {
    /// Opens (creating if missing) the raft state in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        crate::private_files::create_dir(dir).map_err(io_err("create directory", dir))?;
        for name in [LOG, HARD_STATE, SNAPSHOT] {
            let tmp = tmp_path(dir, name);
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &tmp)(e));
                }
                _ => {}
            }
            let path = dir.join(name);
            crate::private_files::restrict(&path, crate::private_files::FILE_MODE)
                .map_err(io_err("narrow the permissions of", &path))?;
        }

        let hs_path = dir.join(HARD_STATE);
        let (mut hard_state, mut conf_state) = match read_frames(&hs_path, 2)? {
            Some(f) => (
                decode(&f[0], &hs_path, 0)?,
                decode(&f[1], &hs_path, FRAME_HEADER + f[0].len())?,
            ),
            None => (HardState::default(), ConfState::default()),
        };
        let snap_path = dir.join(SNAPSHOT);
        let snapshot: Snapshot = match read_frames(&snap_path, 1)? {
            Some(f) => decode(&f[0], &snap_path, 0)?,
            None => Snapshot::default(),
        };
        let (snap_index, snap_term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        if snap_index > hard_state.commit {
            // Crashed while installing the snapshot, before the hard state was rewritten.
            hard_state.commit = snap_index;
            hard_state.term = hard_state.term.max(snap_term);
            conf_state = snapshot.get_metadata().get_conf_state().clone();
        }

        let log_path = dir.join(LOG);
        let buf = match fs::read(&log_path) {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", &log_path)(e)),
        };
        let scan = scan_log(&log_path, &buf)?;
        drop(buf);
        let (mut entries, mut offsets) = (scan.entries, scan.offsets);
        let covered = entries.iter().take_while(|e| e.index <= snap_index).count();
        if covered > 0 {
            let at_snap = &entries[covered - 1];
            if at_snap.index == snap_index && at_snap.term == snap_term {
                entries.drain(..covered);
                offsets.drain(..covered);
            } else {
                if covered < entries.len() {
                    warn!(path = %log_path.display(), snap_index, "raft log diverges from the snapshot; dropping it");
                }
                entries.clear();
                offsets.clear();
            }
        }
        if let Some(first) = entries.first()
            && first.index != snap_index + 1
        {
            let reason = format!(
                "log starts at index {} but the snapshot ends at {snap_index}",
                first.index
            );
            return Err(corrupt(&log_path, offsets[0] as usize, reason));
        }
        let last_index = entries.last().map_or(snap_index, |e| e.index);
        if hard_state.commit > last_index {
            return Err(StorageError::LostCommitted {
                path: log_path,
                last_index,
                commit: hard_state.commit,
            });
        }

        let log = open_log(&log_path)?;
        if let Some((offset, reason)) = scan.torn {
            warn!(path = %log_path.display(), offset, reason, "raft log ends in an append that never completed (so was never acknowledged); truncating it there");
            log.set_len(offset as u64)
                .and_then(|()| log.sync_data())
                .map_err(io_err("truncate", &log_path))?;
        }
        sync_dir(dir)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            log,
            log_len: scan.good_len as u64,
            entries,
            offsets,
            hard_state,
            conf_state,
            snapshot,
        };
        if covered > 0 {
            info!(path = %log_path.display(), snap_index, "finishing an interrupted compaction: rewriting the raft log without the entries the snapshot covers");
            inner.rewrite_log()?;
        }
        Ok(Self {
            inner: Arc::new(RwLock::new(inner)),
        })
    }

    // A panic never leaves `Inner` half-updated (memory changes only after the disk write
    // succeeded), so a poisoned lock is still safe to use.
    fn rl(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn wl(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when nothing was ever persisted (fresh node).
    pub fn is_empty(&self) -> bool {
        self.rl().is_empty()
    }

    /// Bootstrap of a brand-new single-node cluster: persists `cs` as the initial conf state,
    /// with an empty snapshot at index 0 carrying it.
    pub fn initialize_with_conf_state(&self, cs: ConfState) -> Result<(), StorageError> {
        let mut g = self.wl();
        if !g.is_empty() {
            return Err(StorageError::AlreadyInitialized {
                path: g.dir.clone(),
            });
        }
        // The first voters live in a snapshot at index 1 (as tikv bootstraps): a manager
        // that joins later then receives them in a snapshot instead of replaying a log that
        // never mentions them.
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = BOOTSTRAP_INDEX;
        snap.mut_metadata().term = BOOTSTRAP_INDEX;
        snap.mut_metadata().set_conf_state(cs.clone());
        let mut hs = HardState::default();
        hs.term = BOOTSTRAP_INDEX;
        hs.commit = BOOTSTRAP_INDEX;
        // Hard state first: if we crash before the snapshot, the conf state is already there.
        g.write_state(&hs, &cs)?;
        g.write_snapshot(&snap)?;
        g.hard_state = hs;
        g.conf_state = cs;
        g.snapshot = snap;
        Ok(())
    }

    /// Appends entries (fsync'd before returning), first truncating any existing entries at
    /// index >= `entries[0].index` (conflict resolution).
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(head) = entries.first() else {
            return Ok(());
        };
        let mut g = self.wl();
        let (first_index, last_index) = (g.first_index(), g.last_index());
        if head.index < first_index || head.index > last_index + 1 {
            return Err(StorageError::AppendOutOfRange {
                index: head.index,
                first_index,
                last_index,
            });
        }
        if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(StorageError::AppendNotContiguous {
                index: w[0].index,
                next: w[1].index,
            });
        }
        let inner = &mut *g;
        let path = inner.dir.join(LOG);
        let keep = (head.index - first_index) as usize;
        if keep < inner.entries.len() {
            let offset = inner.offsets[keep];
            inner
                .log
                .set_len(offset)
                .and_then(|()| inner.log.sync_data())
                .map_err(io_err("truncate", &path))?;
            fail::fail_point!("raft-log-after-truncate", |_| Err(crash_point(&path)));
            inner.entries.truncate(keep);
            inner.offsets.truncate(keep);
            inner.log_len = offset;
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            offsets.push(inner.log_len + buf.len() as u64);
            push_frame(&mut buf, e, "raft log entry")?;
        }
        fail::fail_point!("raft-log-torn-append", |_| {
            // Half the frames reach the file, as when the process dies mid-write.
            let _ = inner.log.write_all_at(&buf[..buf.len() / 2], inner.log_len);
            Err(crash_point(&path))
        });
        let written = inner.log.write_all_at(&buf, inner.log_len);
        fail::fail_point!("raft-log-before-sync", |_| Err(crash_point(&path)));
        if let Err(e) = written.and_then(|()| inner.log.sync_data()) {
            // Best effort: do not leave a partial append for the next one to land before.
            let _ = inner.log.set_len(inner.log_len);
            return Err(io_err("append to", &path)(e));
        }
        inner.log_len += buf.len() as u64;
        inner.entries.extend_from_slice(entries);
        inner.offsets.extend(offsets);
        Ok(())
    }

    /// Persists the hard state atomically and durably.
    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        let mut g = self.wl();
        g.write_state(hs, &g.conf_state)?;
        g.hard_state = hs.clone();
        Ok(())
    }

    /// Sets the commit index in the hard state (helper for light ready).
    pub fn set_commit(&self, commit: u64) -> Result<(), StorageError> {
        let mut g = self.wl();
        let mut hs = g.hard_state.clone();
        hs.commit = commit;
        g.write_state(&hs, &g.conf_state)?;
        g.hard_state = hs;
        Ok(())
    }

    /// Persists the conf state (after a conf change is applied).
    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StorageError> {
        let mut g = self.wl();
        g.write_state(&g.hard_state, &cs)?;
        g.conf_state = cs;
        Ok(())
    }

    /// Installs a snapshot received from the leader: replaces the snapshot, the conf state and
    /// the commit index, and drops the whole log (raft-rs only installs a snapshot that does not
    /// match the log, so what follows it may have diverged), durably.
    pub fn apply_snapshot(&self, snap: Snapshot) -> Result<(), StorageError> {
        let mut g = self.wl();
        let meta = snap.get_metadata();
        if meta.index < g.first_index() {
            return Err(StorageError::SnapshotOutOfDate {
                index: meta.index,
                first_index: g.first_index(),
            });
        }
        let mut hs = g.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        let cs = meta.get_conf_state().clone();
        g.write_snapshot(&snap)?;
        g.write_state(&hs, &cs)?;
        g.snapshot = snap;
        g.hard_state = hs;
        g.conf_state = cs;
        g.entries.clear();
        g.rewrite_log()
    }

    /// Local compaction: stores a snapshot of the state machine at `index` (<= applied) with
    /// `data` and `cs`, and drops the log up to `index`, durably. A no-op if `index` is not
    /// past the current snapshot.
    pub fn compact_to_snapshot(
        &self,
        index: u64,
        cs: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut g = self.wl();
        if index <= g.snap_index() {
            return Ok(());
        }
        if index > g.last_index() {
            return Err(StorageError::CompactBeyondLog {
                index,
                last_index: g.last_index(),
            });
        }
        let covered = (index + 1 - g.first_index()) as usize;
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = g.entries[covered - 1].term;
        meta.set_conf_state(cs);
        snap.data = data.into();
        g.write_snapshot(&snap)?;
        g.snapshot = snap;
        g.entries.drain(..covered);
        g.rewrite_log()
    }

    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.rl().conf_state.clone()
    }

    /// The stored snapshot, to restore the state machine at startup.
    pub fn snapshot_data(&self) -> Snapshot {
        self.rl().snapshot.clone()
    }

    pub fn last_index(&self) -> u64 {
        self.rl().last_index()
    }

    pub fn first_index(&self) -> u64 {
        self.rl().first_index()
    }

    /// Bytes of log on disk, to decide when to compact.
    pub fn log_bytes(&self) -> u64 {
        self.rl().log_len
    }
}

impl fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.rl();
        f.debug_struct("DiskStorage")
            .field("dir", &g.dir)
            .field("first_index", &g.first_index())
            .field("last_index", &g.last_index())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.snapshot.get_metadata() == &Default::default()
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first_index(&self) -> u64 {
        self.snap_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.snap_index() + self.entries.len() as u64
    }

    fn write_state(&self, hs: &HardState, cs: &ConfState) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        push_frame(&mut buf, hs, "hard state")?;
        push_frame(&mut buf, cs, "conf state")?;
        write_atomic(&self.dir, HARD_STATE, &buf)
    }

    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        push_frame(&mut buf, snap, "snapshot")?;
        write_atomic(&self.dir, SNAPSHOT, &buf)
    }

    /// Replaces the log file with one holding exactly `self.entries`.
    fn rewrite_log(&mut self) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        self.offsets.clear();
        for e in &self.entries {
            self.offsets.push(buf.len() as u64);
            push_frame(&mut buf, e, "raft log entry")?;
        }
        write_atomic(&self.dir, LOG, &buf)?;
        self.log = open_log(&self.dir.join(LOG))?;
        self.log_len = buf.len() as u64;
        Ok(())
    }
}

impl ::raft::Storage for DiskStorage {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        let g = self.rl();
        Ok(RaftState::new(g.hard_state.clone(), g.conf_state.clone()))
    }

    /// Like `MemStorage`, except that a range past the last index is `Unavailable` rather
    /// than a panic (raft-rs checks bounds before asking).
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        let g = self.rl();
        if low < g.first_index() {
            return Err(::raft::StorageError::Compacted.into());
        }
        if high > g.last_index() + 1 || low > high {
            return Err(::raft::StorageError::Unavailable.into());
        }
        let range = &g.entries[(low - g.first_index()) as usize..(high - g.first_index()) as usize];
        // Same rule as raft's `limit_size`: the first entry always, then while the total fits.
        let max_size = max_size.into().unwrap_or(::raft::NO_LIMIT);
        let mut size = 0u64;
        let mut out = Vec::new();
        for e in range {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        let g = self.rl();
        if idx == g.snap_index() {
            return Ok(g.snapshot.get_metadata().term);
        }
        if idx < g.first_index() {
            return Err(::raft::StorageError::Compacted.into());
        }
        if idx > g.last_index() {
            return Err(::raft::StorageError::Unavailable.into());
        }
        Ok(g.entries[(idx - g.first_index()) as usize].term)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        Ok(self.rl().last_index())
    }

    /// The stored snapshot. Unlike `MemStorage`, which rewrites the index of an older
    /// snapshot to `request_index`, an older one is `SnapshotTemporarilyUnavailable`: its data
    /// is the state at its own index, so relabelling it would lie. Compact, and raft retries.
    fn snapshot(&self, request_index: u64, _to: u64) -> ::raft::Result<Snapshot> {
        let g = self.rl();
        if g.snap_index() < request_index {
            return Err(::raft::StorageError::SnapshotTemporarilyUnavailable.into());
        }
        Ok(g.snapshot.clone())
    }
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

fn open_log(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::private_files::FILE_MODE)
        .open(path)
        .map_err(io_err("open", path))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = tmp_path(dir, name);
    // `open` removed any older temp file, so this one is new and gets the mode.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::private_files::FILE_MODE)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    fail::fail_point!("raft-file-torn-temp", |_| {
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        Err(crash_point(&tmp))
    });
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    let path = dir.join(name);
    fail::fail_point!("raft-file-before-rename", |_| Err(crash_point(&path)));
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    fail::fail_point!("raft-file-after-rename", |_| Err(crash_point(&path)));
    sync_dir(dir)
}

/// The error a crash point returns in tests (`fail`): the process "dies" there, and the
/// test reopens the directory as a restart would.
#[allow(
    dead_code,
    reason = "called only where fail's failpoints feature (tests) compiles the crash points in"
)]
fn crash_point(path: &Path) -> StorageError {
    io_err("crash point at", path)(io::Error::other("simulated crash"))
}

/// Appends one frame holding `msg` to `out`.
fn push_frame(
    out: &mut Vec<u8>,
    msg: &impl Message,
    what: &'static str,
) -> Result<(), StorageError> {
    let payload = msg
        .write_to_bytes()
        .map_err(|source| StorageError::Encode { what, source })?;
    let len = u32::try_from(payload.len()).map_err(|_| StorageError::TooLarge {
        what,
        len: payload.len(),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The intact frame at `pos` (payload of at least `min_len` bytes) and the offset after it,
/// or what is wrong with it.
fn frame_at(buf: &[u8], pos: usize, min_len: usize) -> Result<(&[u8], usize), &'static str> {
    let header = buf
        .get(pos..pos + FRAME_HEADER)
        .ok_or("short frame header")?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header else {
        unreachable!("the header is 8 bytes")
    };
    let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
    if len < min_len {
        return Err("empty frame");
    }
    let start = pos + FRAME_HEADER;
    let payload = buf.get(start..start + len).ok_or("short frame payload")?;
    if crc32fast::hash(payload) != u32::from_le_bytes([*c0, *c1, *c2, *c3]) {
        return Err("checksum mismatch");
    }
    Ok((payload, start + len))
}

fn decode<M: Message>(payload: &[u8], path: &Path, offset: usize) -> Result<M, StorageError> {
    M::parse_from_bytes(payload)
        .map_err(|e| corrupt(path, offset, format!("intact frame does not decode: {e}")))
}

/// Reads a file of exactly `count` frames; `None` if it does not exist.
fn read_frames(path: &Path, count: usize) -> Result<Option<Vec<Vec<u8>>>, StorageError> {
    let buf = match fs::read(path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let mut frames = Vec::with_capacity(count);
    let mut pos = 0;
    while frames.len() < count {
        let (payload, next) =
            frame_at(&buf, pos, 0).map_err(|reason| corrupt(path, pos, reason))?;
        frames.push(payload.to_vec());
        pos = next;
    }
    if pos != buf.len() {
        return Err(corrupt(path, pos, "unexpected data after the last frame"));
    }
    Ok(Some(frames))
}

#[derive(Default)]
struct LogScan {
    entries: Vec<Entry>,
    offsets: Vec<u64>,
    /// Where the intact frames end.
    good_len: usize,
    /// An incomplete last append: its offset and what is wrong with it.
    torn: Option<(usize, &'static str)>,
}

fn scan_log(path: &Path, buf: &[u8]) -> Result<LogScan, StorageError> {
    let mut scan = LogScan::default();
    let mut pos = 0;
    while pos < buf.len() {
        // Entries are never empty (index >= 1), so an all-zero region is not a frame.
        let (payload, next) = match frame_at(buf, pos, 1) {
            Ok(frame) => frame,
            Err(reason) => {
                if let Some(intact) = (pos + 1..buf.len()).find(|&p| frame_at(buf, p, 1).is_ok()) {
                    let reason = format!("{reason}, but an intact frame follows at byte {intact}");
                    return Err(corrupt(path, pos, reason));
                }
                scan.torn = Some((pos, reason));
                break;
            }
        };
        let entry: Entry = decode(payload, path, pos)?;
        let expected = scan.entries.last().map(|e| e.index + 1);
        if entry.index == 0 || expected.is_some_and(|x| x != entry.index) {
            let reason = format!(
                "entry {} where entry {} was expected",
                entry.index,
                expected.unwrap_or(1)
            );
            return Err(corrupt(path, pos, reason));
        }
        scan.entries.push(entry);
        scan.offsets.push(pos as u64);
        pos = next;
    }
    scan.good_len = pos;
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use ::raft::Storage;
    use ::raft::storage::MemStorage;

    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        (e.index, e.term) = (index, term);
        e.data = vec![index as u8; (index % 5 * 20) as usize].into();
        e
    }

    fn ents(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|i| ent(i, term)).collect()
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        (h.term, h.vote, h.commit) = (term, vote, commit);
        h
    }

    fn cs(voters: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        }
    }

    fn snap(index: u64, term: u64, voters: &[u64]) -> Snapshot {
        let mut s = Snapshot::default();
        (s.mut_metadata().index, s.mut_metadata().term) = (index, term);
        s.mut_metadata().set_conf_state(cs(voters));
        s
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    fn compacted<T>() -> ::raft::Result<T> {
        Err(::raft::StorageError::Compacted.into())
    }

    /// Opens `dir/raft` with `n` entries (term 1) and the given commit index.
    fn with_log(n: u64, commit: u64) -> (tempfile::TempDir, PathBuf, DiskStorage) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let disk = DiskStorage::open(&dir).unwrap();
        disk.append(&ents(1..=n, 1)).unwrap();
        disk.set_hard_state(&hs(1, 1, commit)).unwrap();
        (tmp, dir, disk)
    }

    fn offset_of(disk: &DiskStorage, index: u64) -> u64 {
        let g = disk.rl();
        g.offsets[(index - g.first_index()) as usize]
    }

    fn edit_file(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        edit(&mut bytes);
        fs::write(path, bytes).unwrap();
    }

    fn assert_like_mem(mem: &MemStorage, disk: &DiskStorage, step: &str) {
        let (m, d) = (mem.initial_state().unwrap(), disk.initial_state().unwrap());
        assert_eq!(
            (m.hard_state, m.conf_state),
            (d.hard_state, d.conf_state),
            "{step}"
        );
        let (first, last) = (mem.first_index().unwrap(), mem.last_index().unwrap());
        assert_eq!(
            (first, last),
            (disk.first_index(), disk.last_index()),
            "{step}"
        );
        for i in 0..=last + 2 {
            assert_eq!(mem.term(i), Storage::term(disk, i), "{step}: term({i})");
        }
        for lo in 1..=last {
            for hi in lo + 1..=last + 1 {
                // Exactly the size of the first two entries: the limit is inclusive.
                let all = mem.entries(lo, hi, None, ctx()).unwrap_or_default();
                let two = all
                    .iter()
                    .take(2)
                    .map(|e| u64::from(e.compute_size()))
                    .sum();
                for max in [
                    None,
                    Some(0),
                    Some(60),
                    Some(two),
                    Some(two.saturating_sub(1)),
                ] {
                    let (m, d) = (
                        mem.entries(lo, hi, max, ctx()),
                        disk.entries(lo, hi, max, ctx()),
                    );
                    assert_eq!(m, d, "{step}: entries({lo}, {hi}, {max:?})");
                }
            }
        }
    }

    enum Op {
        Append(u64, u64, u64),
        Hard(u64, u64, u64),
        Conf(&'static [u64]),
        Snap(u64, u64, &'static [u64]),
    }

    #[test]
    fn behaves_like_mem_storage_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mem, mut disk) = (MemStorage::new(), DiskStorage::open(tmp.path()).unwrap());
        assert_like_mem(&mem, &disk, "fresh");
        let script = [
            Op::Hard(1, 1, 0),
            Op::Append(1, 5, 1),
            Op::Append(6, 10, 2),
            Op::Hard(2, 1, 3),
            Op::Append(4, 7, 3),
            Op::Conf(&[1, 2, 3]),
            Op::Append(8, 12, 3),
            Op::Hard(3, 2, 9),
            Op::Snap(15, 4, &[1, 2]),
            Op::Append(16, 20, 4),
            Op::Snap(18, 4, &[1, 2, 3]),
            Op::Append(19, 25, 5),
        ];
        for (n, op) in script.iter().enumerate() {
            match *op {
                Op::Append(lo, hi, term) => {
                    mem.wl().append(&ents(lo..=hi, term)).unwrap();
                    disk.append(&ents(lo..=hi, term)).unwrap();
                }
                Op::Hard(term, vote, commit) => {
                    mem.wl().set_hardstate(hs(term, vote, commit));
                    disk.set_hard_state(&hs(term, vote, commit)).unwrap();
                }
                Op::Conf(voters) => {
                    mem.wl().set_conf_state(cs(voters));
                    disk.set_conf_state(cs(voters)).unwrap();
                }
                Op::Snap(index, term, voters) => {
                    mem.wl().apply_snapshot(snap(index, term, voters)).unwrap();
                    disk.apply_snapshot(snap(index, term, voters)).unwrap();
                }
            }
            assert_like_mem(&mem, &disk, &format!("step {n}"));
            disk = DiskStorage::open(tmp.path()).unwrap();
            assert_like_mem(&mem, &disk, &format!("step {n}, reopened"));
        }
        // Beyond MemStorage, which panics here.
        let unavailable = Err(::raft::StorageError::Unavailable.into());
        assert_eq!(disk.entries(20, 27, None, ctx()), unavailable);
        assert!(matches!(
            disk.append(&ents(27..=28, 5)),
            Err(StorageError::AppendOutOfRange { .. })
        ));
        assert!(matches!(
            disk.apply_snapshot(snap(10, 4, &[1])),
            Err(StorageError::SnapshotOutOfDate { .. })
        ));
    }

    #[test]
    fn files_are_private_and_loose_ones_are_narrowed_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let chmod = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
        // Under the usual umask (022) files would be 0644 and the directory 0755.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let disk = DiskStorage::open(&dir).unwrap();
        disk.initialize_with_conf_state(cs(&[1])).unwrap();
        disk.append(&ents(2..=4, 1)).unwrap();
        // Compaction writes a new snapshot and rewrites the log.
        disk.compact_to_snapshot(3, cs(&[1]), b"CA key and join tokens".to_vec())
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        for name in [LOG, HARD_STATE, SNAPSHOT] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        // As an older shoal left them.
        drop(disk);
        chmod(&dir, 0o755).unwrap();
        for name in [LOG, HARD_STATE, SNAPSHOT] {
            chmod(&dir.join(name), 0o644).unwrap();
        }
        let disk = DiskStorage::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for name in [LOG, HARD_STATE, SNAPSHOT] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name} after reopening");
        }
        assert_eq!(disk.last_index(), 4, "and the log reads as before");
    }

    #[test]
    fn bootstrap_persists_the_conf_state() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = DiskStorage::open(tmp.path()).unwrap();
        assert!(disk.is_empty());
        disk.initialize_with_conf_state(cs(&[1])).unwrap();
        let disk = DiskStorage::open(tmp.path()).unwrap();
        assert!(!disk.is_empty());
        assert!(disk.initial_state().unwrap().initialized());
        assert_eq!(disk.conf_state(), cs(&[1]));
        assert_eq!((disk.first_index(), Storage::term(&disk, 1)), (2, Ok(1)));
        assert_eq!(disk.hard_state().commit, BOOTSTRAP_INDEX);
        let snap = Storage::snapshot(&disk, 0, 0).unwrap();
        assert_eq!(snap.get_metadata().get_conf_state(), &cs(&[1]));
        let again = disk.initialize_with_conf_state(cs(&[2]));
        assert!(matches!(
            again,
            Err(StorageError::AlreadyInitialized { .. })
        ));
    }

    #[test]
    fn conflicting_append_truncates() {
        let (_tmp, dir, disk) = with_log(10, 5);
        disk.append(&ents(6..=8, 2)).unwrap();
        let disk = DiskStorage::open(&dir).unwrap();
        assert_eq!(disk.last_index(), 8);
        let terms: Vec<u64> = (1..=8).map(|i| Storage::term(&disk, i).unwrap()).collect();
        assert_eq!(terms, [1, 1, 1, 1, 1, 2, 2, 2]);
        assert_eq!(disk.log_bytes(), fs::metadata(dir.join(LOG)).unwrap().len());
    }

    #[test]
    fn torn_or_corrupt_tail_is_truncated() {
        // Frame 10 cut short, its last byte flipped, or zeroed and followed by zeros (a size
        // update that reached the disk before the data).
        let chop = |b: &mut Vec<u8>, _| b.truncate(b.len() - 3);
        let flip = |b: &mut Vec<u8>, _| *b.last_mut().unwrap() ^= 0xff;
        let zeros = |b: &mut Vec<u8>, at: usize| {
            b[at..].fill(0);
            b.extend_from_slice(&[0; 100]);
        };
        for edit in [&chop as &dyn Fn(&mut Vec<u8>, usize), &flip, &zeros] {
            let (_tmp, dir, disk) = with_log(10, 9);
            let expected_len = offset_of(&disk, 10);
            drop(disk);
            edit_file(&dir.join(LOG), |b| edit(b, expected_len as usize));
            let disk = DiskStorage::open(&dir).unwrap();
            assert_eq!(disk.last_index(), 9);
            assert_eq!(fs::metadata(dir.join(LOG)).unwrap().len(), expected_len);
            disk.append(&ents(10..=11, 2)).unwrap();
            assert_eq!(DiskStorage::open(&dir).unwrap().last_index(), 11);
        }
    }

    #[test]
    fn corrupt_middle_frame_is_refused() {
        let (_tmp, dir, disk) = with_log(10, 2);
        let offset = offset_of(&disk, 5);
        edit_file(&dir.join(LOG), |b| {
            b[offset as usize + FRAME_HEADER + 1] ^= 0xff
        });
        let err = DiskStorage::open(&dir).unwrap_err();
        assert!(
            matches!(err, StorageError::Corrupt { offset: o, .. } if o == offset),
            "{err}"
        );
    }

    #[test]
    fn corrupt_hard_state_is_refused() {
        let (_tmp, dir, _disk) = with_log(3, 2);
        edit_file(&dir.join(HARD_STATE), |b| b[FRAME_HEADER] ^= 0xff);
        let err = DiskStorage::open(&dir).unwrap_err();
        assert!(matches!(&err, StorageError::Corrupt { path, .. } if path.ends_with(HARD_STATE)));
    }

    #[test]
    fn lost_committed_entries_are_refused() {
        let (_tmp, dir, disk) = with_log(10, 10);
        let cut = offset_of(&disk, 9);
        // A torn entry 9, then entry 9 missing altogether.
        for len in [cut as usize + 5, cut as usize] {
            edit_file(&dir.join(LOG), |b| b.truncate(len));
            let err = DiskStorage::open(&dir).unwrap_err();
            assert!(
                matches!(
                    err,
                    StorageError::LostCommitted {
                        last_index: 8,
                        commit: 10,
                        ..
                    }
                ),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("ends at index 8 but entries up to 10 were committed"),
                "{msg}"
            );
            assert!(msg.contains("backup") && msg.contains("re-join"), "{msg}");
            assert_eq!(
                fs::metadata(dir.join(LOG)).unwrap().len(),
                len as u64,
                "must not modify"
            );
        }
    }

    #[test]
    fn compaction_survives_reopen_and_a_crash_before_the_log_rewrite() {
        let (_tmp, dir, disk) = with_log(100, 100);
        let old_log = fs::read(dir.join(LOG)).unwrap();
        disk.compact_to_snapshot(60, cs(&[1]), b"state".to_vec())
            .unwrap();
        disk.compact_to_snapshot(50, cs(&[1]), Vec::new()).unwrap(); // older: no-op
        assert!(disk.log_bytes() < old_log.len() as u64);
        let check = |disk: &DiskStorage| {
            assert_eq!((disk.first_index(), disk.last_index()), (61, 100));
            assert_eq!(Storage::term(disk, 60), Ok(1));
            assert_eq!(
                disk.entries(61, 101, None, ctx()).unwrap(),
                ents(61..=100, 1)
            );
            assert_eq!(disk.entries(10, 20, None, ctx()), compacted());
            assert_eq!(Storage::term(disk, 59), compacted());
            let snap = Storage::snapshot(disk, 0, 2).unwrap();
            assert_eq!(
                (snap.get_metadata().index, &snap.data[..]),
                (60, &b"state"[..])
            );
        };
        check(&DiskStorage::open(&dir).unwrap());
        // The snapshot is durable but the old log is back, as if we crashed before its rewrite.
        fs::write(dir.join(LOG), &old_log).unwrap();
        let disk = DiskStorage::open(&dir).unwrap();
        check(&disk);
        assert_eq!(disk.log_bytes(), fs::metadata(dir.join(LOG)).unwrap().len());
        assert!(
            disk.log_bytes() < old_log.len() as u64,
            "covered entries are dropped from the file"
        );
    }

    #[test]
    fn snapshot_newer_than_the_log_empties_it() {
        let (_tmp, dir, disk) = with_log(10, 5);
        let old_state = fs::read(dir.join(HARD_STATE)).unwrap();
        disk.apply_snapshot(snap(20, 3, &[1, 2])).unwrap();
        // Also as if we crashed before the hard state was rewritten.
        for crash in [false, true] {
            if crash {
                fs::write(dir.join(HARD_STATE), &old_state).unwrap();
            }
            let disk = DiskStorage::open(&dir).unwrap();
            assert_eq!(
                (disk.first_index(), disk.last_index(), disk.log_bytes()),
                (21, 20, 0)
            );
            assert_eq!((disk.hard_state().commit, disk.hard_state().term), (20, 3));
            assert_eq!(disk.conf_state(), cs(&[1, 2]));
            assert_eq!(Storage::term(&disk, 20), Ok(3));
        }
        disk.append(&ents(21..=22, 3)).unwrap();
        assert_eq!(DiskStorage::open(&dir).unwrap().last_index(), 22);
    }

    /// Opening arbitrary bytes: random and mangled log, hard state and snapshot files
    /// either open (with what survives of them, consistent) or fail with an error that
    /// names the file; never a panic.
    #[test]
    fn opening_mangled_files_errs_or_recovers_and_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5_0a1);
        let (_tmp, dir, disk) = with_log(30, 20);
        disk.compact_to_snapshot(10, cs(&[1]), b"state".to_vec())
            .unwrap();
        drop(disk);
        let originals: Vec<(&str, Vec<u8>)> = [LOG, HARD_STATE, SNAPSHOT]
            .into_iter()
            .map(|n| (n, fs::read(dir.join(n)).unwrap_or_default()))
            .collect();
        let (mut opened, mut refused) = (0, 0);
        for round in 0..400 {
            for (name, bytes) in &originals {
                fs::write(dir.join(name), bytes).unwrap();
            }
            let (name, bytes) = &originals[rng.random_range(0..originals.len())];
            let mut b = bytes.clone();
            match rng.random_range(0..4) {
                0 if !b.is_empty() => {
                    for _ in 0..rng.random_range(1..8) {
                        let i = rng.random_range(0..b.len());
                        b[i] ^= 1 << rng.random_range(0..8);
                    }
                }
                1 => b.truncate(rng.random_range(0..=b.len())),
                2 => {
                    let at = rng.random_range(0..=b.len());
                    let junk: Vec<u8> =
                        (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                    b.splice(at..at, junk);
                }
                _ => {
                    b = (0..rng.random_range(0..512))
                        .map(|_| rng.random())
                        .collect()
                }
            }
            fs::write(dir.join(name), &b).unwrap();
            let result = std::panic::catch_unwind(|| DiskStorage::open(&dir));
            match result {
                Err(_) => panic!("round {round}: opening a mangled {name} panicked"),
                Ok(Err(e)) => {
                    refused += 1;
                    let text = e.to_string();
                    assert!(
                        text.contains(&dir.display().to_string()),
                        "round {round}: {text}"
                    );
                }
                Ok(Ok(d)) => {
                    opened += 1;
                    let st = d.initial_state().unwrap();
                    assert!(d.first_index() <= d.last_index() + 1, "round {round}");
                    assert!(st.hard_state.commit <= d.last_index(), "round {round}");
                }
            }
        }
        assert!(
            opened > 0 && refused > 0,
            "{opened} opened, {refused} refused"
        );
    }
}

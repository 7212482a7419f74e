//! raft-rs `Storage` on disk, durable before anything is acknowledged.
//!
//! Files in the raft dir:
//! - `log`: entries after the snapshot, as frames `[u32 LE length][u32 LE crc32][Entry]`
//!   (protobuf). Appends are fsynced before `append` returns; a conflicting append truncates
//!   the file at the first replaced entry.
//! - `hardstate`, `snapshot`: `[u32 LE crc32][protobuf]`, replaced atomically (temp file,
//!   fsync, rename, fsync of the directory). The snapshot carries the state machine.
//!
//! Recovery on open:
//! - a torn or corrupt *last* frame is an append that never finished (so it was never
//!   acknowledged): the file is cut back to the last good frame, with a warning;
//! - if that leaves the log short of the hard state's commit index, committed entries are
//!   missing: open fails (`LostCommitted`) instead of silently forgetting them;
//! - a bad frame followed by good ones (corruption in the middle), a gap in indexes, or a
//!   corrupt hardstate/snapshot file: open fails (`Corrupt`);
//! - entries at or below the snapshot index (a crash between writing a snapshot and
//!   rewriting the log) are dropped.

use ::raft::prelude::*;
use ::raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use protobuf::Message as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is corrupt at byte {offset}: {reason}; restore the state dir from a backup, or remove this manager (shoal node demote/rm) and join it again"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{path} ends at entry {last_index} but entries up to {commit} were committed; refusing to start without them. Restore the state dir from a backup, or remove this manager (shoal node demote/rm) and join it again"
    )]
    LostCommitted {
        path: PathBuf,
        last_index: u64,
        commit: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot index, contiguous.
    entries: Vec<Entry>,
    /// File offset of each entry's frame.
    offsets: Vec<u64>,
    log_len: u64,
}

impl Core {
    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn first_index(&self) -> u64 {
        self.snap_index() + 1
    }
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snap_index())
    }
}

/// Index and term of the bootstrap snapshot of a new cluster.
pub const BOOTSTRAP_INDEX: u64 = 1;

pub struct DiskStorage {
    dir: PathBuf,
    core: RwLock<Core>,
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// `[crc][protobuf]` written atomically.
fn write_checked(dir: &Path, name: &str, payload: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut data = crc32fast::hash(payload).to_le_bytes().to_vec();
    data.extend_from_slice(payload);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn read_checked<M: protobuf::Message>(dir: &Path, name: &str) -> Result<Option<M>, StorageError> {
    let path = dir.join(name);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.to_string(),
    };
    if data.len() < 4 {
        return Err(corrupt("shorter than its checksum"));
    }
    let crc = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&data[4..]) {
        return Err(corrupt("checksum mismatch"));
    }
    M::parse_from_bytes(&data[4..])
        .map(Some)
        .map_err(|e| corrupt(&format!("does not decode: {e}")))
}

/// Reads log frames; returns entries with offsets, and the length of the good prefix.
fn read_log(path: &Path) -> Result<(Vec<Entry>, Vec<u64>, u64), StorageError> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![], 0)),
        Err(e) => return Err(io_err(path)(e)),
    }
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0usize;
    let bad_at = loop {
        if pos == data.len() {
            break None;
        }
        if data.len() - pos < 8 {
            break Some((pos, "torn frame header"));
        }
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
        if data.len() - pos - 8 < len {
            break Some((pos, "torn frame"));
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            break Some((pos, "checksum mismatch"));
        }
        let Ok(entry) = Entry::parse_from_bytes(payload) else {
            break Some((pos, "entry does not decode"));
        };
        if let Some(prev) = entries.last().map(|e: &Entry| e.index)
            && entry.index != prev + 1
        {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: pos as u64,
                reason: format!("entry {} follows entry {prev}", entry.index),
            });
        }
        offsets.push(pos as u64);
        entries.push(entry);
        pos += 8 + len;
    };
    if let Some((at, reason)) = bad_at {
        // Only the tail may be bad: any valid frame after it means real corruption.
        if later_frame_is_valid(&data, at) {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: at as u64,
                reason: format!("{reason}, with valid entries after it"),
            });
        }
        tracing::warn!(path = %path.display(), offset = at, reason, "dropping an unfinished append at the end of the raft log");
        return Ok((entries, offsets, at as u64));
    }
    Ok((entries, offsets, pos as u64))
}

fn later_frame_is_valid(data: &[u8], bad: usize) -> bool {
    (bad + 1..data.len().saturating_sub(8)).any(|p| {
        let len = u32::from_le_bytes(data[p..p + 4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(data[p + 4..p + 8].try_into().expect("4"));
        len > 0
            && data.len() - p - 8 >= len
            && crc32fast::hash(&data[p + 8..p + 8 + len]) == crc
            && Entry::parse_from_bytes(&data[p + 8..p + 8 + len]).is_ok()
    })
}

impl DiskStorage {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let hard_state: HardState = read_checked(dir, "hardstate")?.unwrap_or_default();
        let snapshot: Snapshot = read_checked(dir, "snapshot")?.unwrap_or_default();
        let log_path = dir.join("log");
        let (mut entries, mut offsets, good_len) = read_log(&log_path)?;
        let actual_len = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        if good_len < actual_len {
            let f = OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io_err(&log_path))?;
            f.set_len(good_len).map_err(io_err(&log_path))?;
            f.sync_all().map_err(io_err(&log_path))?;
        }
        let snap_index = snapshot.get_metadata().index;
        let keep_from = entries
            .iter()
            .position(|e| e.index > snap_index)
            .unwrap_or(entries.len());
        entries.drain(..keep_from);
        offsets.drain(..keep_from);
        if let Some(first) = entries.first()
            && first.index != snap_index + 1
        {
            return Err(StorageError::Corrupt {
                path: log_path,
                offset: offsets[0],
                reason: format!(
                    "log starts at entry {} but the snapshot ends at {snap_index}",
                    first.index
                ),
            });
        }
        let last_index = entries.last().map(|e| e.index).unwrap_or(snap_index);
        if last_index < hard_state.commit {
            return Err(StorageError::LostCommitted {
                path: log_path,
                last_index,
                commit: hard_state.commit,
            });
        }
        let conf_state = snapshot.get_metadata().get_conf_state().clone();
        let storage = DiskStorage {
            dir: dir.to_path_buf(),
            core: RwLock::new(Core {
                hard_state,
                conf_state,
                snapshot,
                entries,
                offsets,
                log_len: good_len,
            }),
        };
        // The conf state may have moved past the snapshot's with applied conf changes.
        if let Some(cs) = read_checked::<ConfState>(dir, "confstate")? {
            storage.core.write().expect("lock").conf_state = cs;
        }
        Ok(storage)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    pub fn is_empty(&self) -> bool {
        let c = self.core.read().expect("lock");
        c.entries.is_empty()
            && c.snap_index() == 0
            && c.conf_state.voters.is_empty()
            && c.hard_state.term == 0
    }

    /// Bootstraps a new cluster: the first voters live in a snapshot at index 1 (as tikv
    /// does), so a manager that joins later receives them with that snapshot instead of
    /// replaying a log that never mentioned them.
    pub fn initialize_with_conf_state(&self, cs: ConfState) -> Result<(), StorageError> {
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = BOOTSTRAP_INDEX;
        snap.mut_metadata().term = BOOTSTRAP_INDEX;
        snap.mut_metadata().set_conf_state(cs.clone());
        write_checked(
            &self.dir,
            "snapshot",
            &snap.write_to_bytes().expect("encode"),
        )?;
        self.set_conf_state(cs.clone())?;
        let mut hs = HardState::default();
        hs.term = BOOTSTRAP_INDEX;
        hs.commit = BOOTSTRAP_INDEX;
        self.set_hard_state(&hs)?;
        let mut c = self.core.write().expect("lock");
        c.snapshot = snap;
        c.conf_state = cs;
        Ok(())
    }

    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut c = self.core.write().expect("lock");
        let path = self.log_path();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if first.index <= c.last_index() {
            // Conflict: cut the replaced suffix off the file and the memory.
            let keep = first.index.saturating_sub(c.first_index()) as usize;
            let cut = c.offsets.get(keep).copied().unwrap_or(c.log_len);
            file.set_len(cut).map_err(io_err(&path))?;
            c.entries.truncate(keep);
            c.offsets.truncate(keep);
            c.log_len = cut;
        }
        let mut buf = Vec::new();
        let mut offset = c.log_len;
        for e in entries {
            let f = frame(&e.write_to_bytes().expect("encode"));
            c.offsets.push(offset);
            offset += f.len() as u64;
            buf.extend_from_slice(&f);
        }
        file.write_all(&buf).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        c.log_len = offset;
        c.entries.extend_from_slice(entries);
        Ok(())
    }

    pub fn set_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "hardstate",
            &hs.write_to_bytes().expect("encode"),
        )?;
        self.core.write().expect("lock").hard_state = hs.clone();
        Ok(())
    }

    pub fn set_commit(&self, commit: u64) -> Result<(), StorageError> {
        let mut hs = self.hard_state();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "confstate",
            &cs.write_to_bytes().expect("encode"),
        )?;
        self.core.write().expect("lock").conf_state = cs;
        Ok(())
    }

    /// Rewrites the log with only the entries after the snapshot (after the snapshot itself
    /// is durable).
    fn rewrite_log(&self, c: &mut Core) -> Result<(), StorageError> {
        let path = self.log_path();
        let tmp = self.dir.join("log.tmp");
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for e in &c.entries {
            offsets.push(buf.len() as u64);
            buf.extend_from_slice(&frame(&e.write_to_bytes().expect("encode")));
        }
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        c.offsets = offsets;
        c.log_len = buf.len() as u64;
        Ok(())
    }

    /// A snapshot from the leader replaces what it covers.
    pub fn apply_snapshot(&self, snap: Snapshot) -> Result<(), StorageError> {
        write_checked(
            &self.dir,
            "snapshot",
            &snap.write_to_bytes().expect("encode"),
        )?;
        let meta = snap.get_metadata().clone();
        let mut c = self.core.write().expect("lock");
        c.entries.retain(|e| e.index > meta.index);
        if c.entries.first().is_some_and(|e| e.index != meta.index + 1) {
            c.entries.clear();
        }
        c.snapshot = snap;
        c.conf_state = meta.get_conf_state().clone();
        c.hard_state.commit = c.hard_state.commit.max(meta.index);
        c.hard_state.term = c.hard_state.term.max(meta.term);
        let hs = c.hard_state.clone();
        self.rewrite_log(&mut c)?;
        drop(c);
        self.set_conf_state(meta.get_conf_state().clone())?;
        self.set_hard_state(&hs)
    }

    /// Local compaction: keeps `data` as the snapshot at `index` and drops the log up to it.
    pub fn compact_to_snapshot(
        &self,
        index: u64,
        cs: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut c = self.core.write().expect("lock");
        if index <= c.snap_index() || index > c.last_index() {
            return Ok(());
        }
        let term = c.entries[(index - c.first_index()) as usize].term;
        let mut snap = Snapshot::default();
        snap.data = data.into();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs);
        write_checked(
            &self.dir,
            "snapshot",
            &snap.write_to_bytes().expect("encode"),
        )?;
        let drop_n = (index - c.first_index() + 1) as usize;
        c.entries.drain(..drop_n);
        c.snapshot = snap;
        self.rewrite_log(&mut c)
    }

    pub fn hard_state(&self) -> HardState {
        self.core.read().expect("lock").hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.core.read().expect("lock").conf_state.clone()
    }

    pub fn snapshot_data(&self) -> Snapshot {
        self.core.read().expect("lock").snapshot.clone()
    }

    pub fn last_index(&self) -> u64 {
        self.core.read().expect("lock").last_index()
    }

    pub fn first_index(&self) -> u64 {
        self.core.read().expect("lock").first_index()
    }

    pub fn log_bytes(&self) -> u64 {
        self.core.read().expect("lock").log_len
    }
}

impl ::raft::Storage for DiskStorage {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        let c = self.core.read().expect("lock");
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        let c = self.core.read().expect("lock");
        if low < c.first_index() {
            return Err(::raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > c.last_index() + 1 {
            return Err(::raft::Error::Store(RaftStorageError::Unavailable));
        }
        let lo = (low - c.first_index()) as usize;
        let hi = (high - c.first_index()) as usize;
        let mut out = c.entries[lo..hi].to_vec();
        ::raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        let c = self.core.read().expect("lock");
        if idx == c.snap_index() {
            return Ok(c.snapshot.get_metadata().term);
        }
        if idx < c.first_index() {
            return Err(::raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > c.last_index() {
            return Err(::raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(c.entries[(idx - c.first_index()) as usize].term)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        Ok(self.core.read().expect("lock").first_index())
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        Ok(self.core.read().expect("lock").last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> ::raft::Result<Snapshot> {
        Ok(self.core.read().expect("lock").snapshot.clone())
    }
}

#[cfg(test)]
mod tests;

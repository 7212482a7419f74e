use super::*;
use ::raft::Storage;

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("cmd{index}").into_bytes().into();
    e
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = term;
    h.commit = commit;
    h
}

fn all(s: &DiskStorage) -> Vec<(u64, u64)> {
    let (lo, hi) = (s.first_index(), s.last_index());
    s.entries(lo, hi + 1, None, GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

#[test]
fn round_trip_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert!(s.is_empty());
    let mut cs = ConfState::default();
    cs.voters = vec![7];
    s.initialize_with_conf_state(cs.clone()).unwrap();
    assert_eq!(s.first_index(), 2, "the bootstrap snapshot holds index 1");
    s.append(&entries(2..=10, 1)).unwrap();
    s.set_hard_state(&hs(1, 8)).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index(), 10);
    assert_eq!(s.hard_state(), hs(1, 8));
    assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![7]);
    let snap = s.snapshot(0, 0).unwrap();
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![7]);
    assert_eq!(s.term(1).unwrap(), 1);
    assert_eq!(s.term(5).unwrap(), 1);
    let ctx = || GetEntriesContext::empty(false);
    let limited = s.entries(2, 11, Some(1), ctx()).unwrap();
    assert_eq!(limited.len(), 1, "max_size keeps at least one entry");
    assert!(matches!(
        s.entries(1, 5, None, ctx()),
        Err(::raft::Error::Store(RaftStorageError::Compacted))
    ));
    assert!(matches!(
        s.entries(2, 12, None, ctx()),
        Err(::raft::Error::Store(RaftStorageError::Unavailable))
    ));
}

#[test]
fn conflicting_append_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    s.append(&entries(6..=8, 2)).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index(), 8);
    assert_eq!(all(&s)[4..], [(5, 1), (6, 2), (7, 2), (8, 2)]);
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("log")
}

#[test]
fn truncated_tail_recovers_to_last_complete_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    s.set_hard_state(&hs(1, 5)).unwrap();
    drop(s);
    let len = std::fs::metadata(log_file(dir.path())).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(log_file(dir.path()))
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index(), 9);
    s.append(&entries(10..=11, 1)).unwrap();
    drop(s);
    assert_eq!(DiskStorage::open(dir.path()).unwrap().last_index(), 11);
}

#[test]
fn corrupted_tail_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    drop(s);
    let mut data = std::fs::read(log_file(dir.path())).unwrap();
    let n = data.len();
    data[n - 2] ^= 0xff;
    std::fs::write(log_file(dir.path()), &data).unwrap();
    assert_eq!(DiskStorage::open(dir.path()).unwrap().last_index(), 9);
}

#[test]
fn corrupted_middle_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    drop(s);
    let mut data = std::fs::read(log_file(dir.path())).unwrap();
    data[20] ^= 0xff;
    std::fs::write(log_file(dir.path()), &data).unwrap();
    let err = DiskStorage::open(dir.path()).err().expect("must refuse");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn missing_committed_entries_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=10, 1)).unwrap();
    s.set_hard_state(&hs(1, 10)).unwrap();
    drop(s);
    let len = std::fs::metadata(log_file(dir.path())).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(log_file(dir.path()))
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = DiskStorage::open(dir.path()).err().expect("must refuse");
    assert!(
        matches!(
            err,
            StorageError::LostCommitted {
                last_index: 9,
                commit: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to start"));
}

#[test]
fn compaction_keeps_the_tail_and_survives_a_crash_midway() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=100, 3)).unwrap();
    let before = std::fs::read(log_file(dir.path())).unwrap();
    s.compact_to_snapshot(60, ConfState::default(), b"state".to_vec())
        .unwrap();
    assert!(s.log_bytes() < before.len() as u64);
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.first_index(), 61);
    assert_eq!(s.term(60).unwrap(), 3);
    assert_eq!(all(&s).len(), 40);
    assert!(matches!(
        s.entries(10, 20, None, GetEntriesContext::empty(false)),
        Err(::raft::Error::Store(RaftStorageError::Compacted))
    ));
    assert_eq!(&s.snapshot_data().data[..], b"state");
    drop(s);
    // Crash after the snapshot was written but before the log was rewritten.
    std::fs::write(log_file(dir.path()), &before).unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.first_index(), 61);
    assert_eq!(s.last_index(), 100);
}

#[test]
fn snapshot_from_leader_replaces_older_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=5, 1)).unwrap();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 50;
    snap.mut_metadata().term = 4;
    snap.data = b"x".to_vec().into();
    s.apply_snapshot(snap).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.first_index(), 51);
    assert_eq!(s.last_index(), 50);
    assert_eq!(s.hard_state().commit, 50);
    assert_eq!(s.term(50).unwrap(), 4);
}

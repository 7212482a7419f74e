//! A crash at each write, fsync, truncate and rename point of the raft storage (failpoints
//! of the `fail` crate stop the operation there, as a dying process would), then a restart:
//! the reopened storage holds every operation that returned before the crash, and the one
//! that was cut short either wholly or not at all — compared with raft-rs's `MemStorage`
//! after the same acknowledged operations. Its own test binary: failpoints are global.

use raft::prelude::{ConfState, Entry, HardState};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage};
use shoal_manager::consensus::storage::DiskStorage;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
    Compact(u64),
}

fn ents(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes
        .map(|index| Entry {
            index,
            term,
            data: format!("entry {index} of term {term}").into_bytes().into(),
            ..Default::default()
        })
        .collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
        ..Default::default()
    }
}

fn ops() -> Vec<Op> {
    vec![
        Op::Append(ents(1..=5, 1)),
        Op::HardState(hs(1, 3)),
        Op::Append(ents(6..=8, 1)),
        // A new leader overwrites 7 and 8: the log is truncated, then appended to.
        Op::Append(ents(7..=9, 2)),
        Op::HardState(hs(2, 8)),
        Op::Compact(5),
        Op::Append(ents(10..=12, 2)),
        Op::HardState(hs(2, 12)),
    ]
}

fn apply_disk(d: &DiskStorage, op: &Op) -> Result<(), String> {
    match op {
        Op::Append(e) => d.append(e),
        Op::HardState(h) => d.set_hard_state(h),
        Op::Compact(i) => d.compact_to_snapshot(
            *i,
            ConfState {
                voters: vec![1],
                ..Default::default()
            },
            b"state".to_vec(),
        ),
    }
    .map_err(|e| e.to_string())
}

fn apply_mem(m: &MemStorage, op: &Op) {
    let mut w = m.wl();
    match op {
        Op::Append(e) => w.append(e).unwrap(),
        Op::HardState(h) => w.set_hardstate(h.clone()),
        Op::Compact(i) => w.compact(i + 1).unwrap(),
    }
}

/// What a restart must find: the hard state, the first index, and (index, term, data) of
/// each entry.
type Picture = (HardState, u64, Vec<(u64, u64, Vec<u8>)>);

fn picture(s: &impl Storage, first: u64, last: u64) -> Picture {
    let hs = s.initial_state().unwrap().hard_state;
    let entries = if last >= first {
        s.entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
            .into_iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect()
    } else {
        Vec::new()
    };
    (hs, first, entries)
}

fn mem_picture(m: &MemStorage) -> Picture {
    picture(m, m.first_index().unwrap(), m.last_index().unwrap())
}

#[test]
fn a_crash_at_any_storage_point_loses_nothing_acknowledged() {
    let points = [
        "raft-log-after-truncate",
        "raft-log-torn-append",
        "raft-log-before-sync",
        "raft-file-torn-temp",
        "raft-file-before-rename",
        "raft-file-after-rename",
    ];
    let scenario = fail::FailScenario::setup();
    let mut crashes = 0;
    for point in points {
        // The n-th time the point is reached, the process dies there.
        for n in 0.. {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("raft");
            let disk = DiskStorage::open(&dir).unwrap();
            let mem = MemStorage::new();
            fail::cfg(point, &format!("{n}*off->return")).unwrap();
            let mut cut = None;
            for op in ops() {
                match apply_disk(&disk, &op) {
                    Ok(()) => apply_mem(&mem, &op),
                    Err(e) => {
                        assert!(e.contains("crash point at"), "{point}: {e}");
                        cut = Some(op);
                        break;
                    }
                }
            }
            fail::remove(point);
            drop(disk);
            let Some(cut) = cut else {
                // Reached fewer than n+1 times: every crash of this point was tried.
                break;
            };
            crashes += 1;
            let reopened = DiskStorage::open(&dir)
                .unwrap_or_else(|e| panic!("{point} #{n}: reopening after the crash: {e}"));
            let got = picture(&reopened, reopened.first_index(), reopened.last_index());
            let without = mem_picture(&mem);
            // An append that died part-way may leave any whole prefix of its entries (frames
            // are checked one by one on open), after the uncommitted entries it was
            // replacing were truncated: raft allows both, as none of it was acknowledged
            // and what was replaced was never committed (the new leader lacks it).
            let partial: Vec<_> = match &cut {
                Op::Append(e) if without.0.commit < e[0].index => (0..=e.len())
                    .map(|k| {
                        let mut t = without.clone();
                        t.2.retain(|(index, _, _)| *index < e[0].index);
                        t.2.extend(e[..k].iter().map(|x| (x.index, x.term, x.data.to_vec())));
                        t
                    })
                    .collect(),
                _ => Vec::new(),
            };
            apply_mem(&mem, &cut);
            let with = mem_picture(&mem);
            assert!(
                got == without || got == with || partial.contains(&got),
                "{point} #{n} during {cut:?}:\n got {got:?}\n want {without:?}\n or {with:?}"
            );
        }
    }
    scenario.teardown();
    assert!(crashes >= points.len(), "{crashes} crashes tried");
    eprintln!("raft storage: {crashes} crash points tried, nothing acknowledged lost");
}

//! Publishing task output for `service logs`: the last lines of each task's output files,
//! then, when following, what gets appended, until the reader goes away.

use super::record;
use super::rotate::{files_oldest_first, rotated};
use crate::tasks::TaskRunner;
use shoal_api::logs::{LogSubscription, PublishItem};
use shoal_api::pb::Frame;
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::wire::frame;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;

const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Where a follower has read a task's current file up to; the inode tells a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    inode: u64,
    offset: u64,
}

/// The complete lines in `bytes` (a partial last line waits for its newline), and how many
/// bytes they take: an offset in the file, whatever invalid UTF-8 it holds.
fn complete_lines(bytes: &[u8]) -> (Vec<String>, u64) {
    let len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..len]);
    (text.lines().map(String::from).collect(), len as u64)
}

/// The lines `sub` asks for now, oldest first, and where following goes on from. Files are
/// read newest first and reading stops once `tail` lines are in hand.
fn initial_lines(path: &Path, tail: Option<u64>, since: Option<i64>) -> (Vec<String>, Cursor) {
    let mut cursor = Cursor {
        inode: 0,
        offset: 0,
    };
    let mut newest_first: Vec<String> = Vec::new();
    let full = |lines: &Vec<String>| tail.is_some_and(|t| lines.len() as u64 >= t);
    for (n, file) in files_oldest_first(path).iter().rev().enumerate() {
        // The current file is always read: following goes on from its end.
        if n > 0 && full(&newest_first) {
            break;
        }
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let (lines, len) = complete_lines(&bytes);
        if n == 0 {
            let inode = std::fs::metadata(file).map(|m| m.ino()).unwrap_or(0);
            cursor = Cursor { inode, offset: len };
        }
        for line in lines.iter().rev() {
            if full(&newest_first) {
                break;
            }
            if wanted(line, since) {
                newest_first.push(line.clone());
            }
        }
    }
    newest_first.reverse();
    (newest_first, cursor)
}

fn wanted(line: &str, since: Option<i64>) -> bool {
    match (since, record::parse(line).time) {
        (Some(since), Some(t)) => t >= since,
        // Lines from before shoal kept times can't be placed: left out when asked for a
        // time, kept otherwise.
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Lines appended since `cursor`, across a rotation: the rest of the file that was current
/// (now `.1`), then the new one from its start.
fn advance(path: &Path, cursor: &mut Cursor) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if meta.ino() != cursor.inode {
        let old = rotated(path, 1);
        if std::fs::metadata(&old).is_ok_and(|m| m.ino() == cursor.inode)
            && let Some((bytes, _)) = read_from(&old, cursor.offset)
        {
            out.extend(complete_lines(&bytes).0);
        }
        *cursor = Cursor {
            inode: meta.ino(),
            offset: 0,
        };
    }
    if let Some((bytes, advanced)) = read_from(path, cursor.offset) {
        cursor.offset += advanced;
        out.extend(complete_lines(&bytes).0);
    }
    out
}

pub async fn publish(
    mut client: DispatcherClient<Channel>,
    runner: TaskRunner,
    sub: LogSubscription,
) {
    let (tx, rx) = mpsc::channel::<Frame>(256);
    let call = tokio::spawn(async move {
        client
            .publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let send = |task_id: &str, line: &str| {
        let tx = tx.clone();
        let rec = record::parse(line);
        let item = PublishItem::Line {
            task_id: task_id.to_string(),
            line: rec.text.to_string(),
            time: rec.time,
            stream: rec.stream,
        };
        async move { tx.send(frame(&item)).await.is_ok() }
    };
    if tx
        .send(frame(&PublishItem::Start {
            subscription: sub.id,
        }))
        .await
        .is_err()
    {
        return;
    }
    let mut cursors: HashMap<String, Cursor> = HashMap::new();
    for id in &sub.task_ids {
        let (lines, cursor) = initial_lines(&runner.log_path(id), sub.tail, sub.since);
        cursors.insert(id.clone(), cursor);
        for line in lines {
            if !send(id, &line).await {
                return;
            }
        }
    }
    if !sub.follow {
        let _ = tx.send(frame(&PublishItem::Done)).await;
        drop(tx);
        let _ = call.await;
        return;
    }
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if call.is_finished() {
            return;
        }
        for id in &sub.task_ids {
            let Some(cursor) = cursors.get_mut(id) else {
                continue;
            };
            for line in advance(&runner.log_path(id), cursor) {
                if wanted(&line, sub.since) && !send(id, &line).await {
                    return;
                }
            }
        }
    }
}

/// Complete lines appended after `offset`, and how many bytes they take.
fn read_from(path: &std::path::Path, offset: u64) -> Option<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let end = buf.iter().rposition(|b| *b == b'\n')? + 1;
    buf.truncate(end);
    Some((buf, end as u64))
}

#[cfg(test)]
mod tests {
    use super::super::rotate::{Limits, RotatingLog};
    use super::*;
    use shoal_api::logs::Stream;

    fn rec(t: i64, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        record::encode(t, Stream::Stdout, text.as_bytes(), &mut out);
        out
    }

    /// A task's output file that rotates every two one-letter records, `max_files` kept;
    /// and the size of one record.
    fn two_records_per_file(max_files: u32) -> (tempfile::TempDir, u64, RotatingLog) {
        let dir = tempfile::tempdir().unwrap();
        let one = rec(0, "a").len() as u64;
        let limits = Limits {
            max_size: 2 * one,
            max_files,
        };
        let log = RotatingLog::open(&dir.path().join("output.log"), limits).unwrap();
        (dir, one, log)
    }

    fn texts(lines: &[String]) -> Vec<&str> {
        lines.iter().map(|l| record::parse(l).text).collect()
    }

    #[test]
    fn tail_and_since_take_lines_across_rotated_files() {
        let (dir, one, mut log) = two_records_per_file(3);
        let path = dir.path().join("output.log");
        for (t, text) in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")] {
            log.write(&rec(t, text)).unwrap();
        }
        // Files now: .2 = a b, .1 = c d, current = e.
        assert_eq!(
            texts(&initial_lines(&path, None, None).0),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(texts(&initial_lines(&path, Some(2), None).0), ["d", "e"]);
        assert_eq!(
            texts(&initial_lines(&path, None, Some(3)).0),
            ["c", "d", "e"]
        );
        assert_eq!(texts(&initial_lines(&path, Some(1), Some(3)).0), ["e"]);
        let (none, cursor) = initial_lines(&path, Some(0), None);
        assert!(none.is_empty());
        assert_eq!(
            cursor.offset, one,
            "following goes on from the end of the current file"
        );
    }

    #[test]
    fn a_follower_reads_on_across_a_rotation() {
        let (dir, _, mut log) = two_records_per_file(2);
        let path = dir.path().join("output.log");
        log.write(&rec(1, "a")).unwrap();
        let (_, mut cursor) = initial_lines(&path, None, None);
        log.write(&rec(2, "b")).unwrap();
        log.write(&rec(3, "c")).unwrap();
        assert_eq!(texts(&advance(&path, &mut cursor)), ["b", "c"]);
        assert!(advance(&path, &mut cursor).is_empty());
    }

    #[test]
    fn following_reads_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, "one\ntwo\npart").unwrap();
        let (text, n) = read_from(&p, 4).unwrap();
        assert_eq!((text.as_slice(), n), (&b"two\n"[..], 4));
        assert!(read_from(&p, 8).is_none(), "a partial line waits");
    }

    #[test]
    fn bare_lines_of_older_files_are_left_out_only_when_a_time_is_asked_for() {
        assert!(wanted("plain", None));
        assert!(!wanted("plain", Some(0)));
    }
}

//! Publishing task output for `service logs`: the last lines of each task's output file,
//! then, when following, what gets appended, until the reader goes away.

use crate::tasks::TaskRunner;
use shoal_api::logs::{LogSubscription, PublishItem};
use shoal_api::pb::Frame;
use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::wire::frame;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;

const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The last `tail` lines of `text` (all with None).
fn last_lines(text: &str, tail: Option<u64>) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let skip = match tail {
        Some(n) => lines.len().saturating_sub(n as usize),
        None => 0,
    };
    lines[skip..].to_vec()
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
    let send = |item: PublishItem| {
        let tx = tx.clone();
        async move { tx.send(frame(&item)).await.is_ok() }
    };
    if !send(PublishItem::Start {
        subscription: sub.id,
    })
    .await
    {
        return;
    }
    // Where each task's file was read up to.
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for id in &sub.task_ids {
        let text = std::fs::read_to_string(runner.log_path(id)).unwrap_or_default();
        // Only complete lines; a partial last line waits for its newline when following.
        let complete = text.rfind('\n').map(|i| &text[..=i]).unwrap_or("");
        offsets.insert(id.clone(), complete.len() as u64);
        for line in last_lines(complete, sub.tail) {
            if !send(PublishItem::Line {
                task_id: id.clone(),
                line: line.to_string(),
            })
            .await
            {
                return;
            }
        }
    }
    if !sub.follow {
        let _ = send(PublishItem::Done).await;
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
            let offset = offsets.get(id).copied().unwrap_or(0);
            let Some((new, advanced)) = read_from(&runner.log_path(id), offset) else {
                continue;
            };
            offsets.insert(id.clone(), offset + advanced);
            for line in new.lines() {
                if !send(PublishItem::Line {
                    task_id: id.clone(),
                    line: line.to_string(),
                })
                .await
                {
                    return;
                }
            }
        }
    }
}

/// Complete lines appended after `offset`, and how many bytes they take.
fn read_from(path: &std::path::Path, offset: u64) -> Option<(String, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = String::new();
    f.read_to_string(&mut buf).ok()?;
    let end = buf.rfind('\n')? + 1;
    buf.truncate(end);
    Some((buf, end as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", Some(2)), ["b", "c"]);
        assert_eq!(last_lines("a\nb\n", Some(5)), ["a", "b"]);
        assert_eq!(last_lines("a\nb\n", None), ["a", "b"]);
        assert!(last_lines("", Some(1)).is_empty());
    }

    #[test]
    fn following_reads_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, "one\ntwo\npart").unwrap();
        let (text, n) = read_from(&p, 4).unwrap();
        assert_eq!((text.as_str(), n), ("two\n", 4));
        assert!(read_from(&p, 8).is_none(), "a partial line waits");
    }
}

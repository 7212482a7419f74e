//! Routes task output from the nodes that publish it to the `service logs` reader.
//!
//! A subscription goes to particular nodes, each asked for its own tasks. Only those nodes
//! may publish to it, and only lines of the tasks they were asked for: subscription ids are
//! sequential, so any worker certificate could otherwise write into another service's
//! output or, by ending a stream it opened, close another reader's.

use shoal_api::logs::{LogLine, Stream};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tonic::Status;

struct Subscription {
    tx: mpsc::Sender<Result<LogLine, Status>>,
    /// Task id to (task name, node name).
    names: HashMap<String, (String, String)>,
    /// The nodes it was sent to, with the task ids each was asked for.
    asked: HashMap<String, HashSet<String>>,
    /// Nodes still sending.
    pending: HashSet<String>,
}

/// May a node publish to a subscription?
#[derive(Debug, PartialEq, Eq)]
pub enum Publisher {
    Allowed,
    /// The subscription was not sent to this node.
    NotAsked,
    /// No such subscription (any more): its reader left or every node finished.
    Gone,
}

/// What became of a published line.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Not a task this node was asked for: dropped.
    NotAsked,
    /// The reader went away.
    Gone,
}

/// One line as a node published it.
pub struct Written {
    pub line: String,
    pub time: Option<i64>,
    pub stream: Stream,
}

#[derive(Clone, Default)]
pub struct LogBroker {
    subs: Arc<Mutex<HashMap<u64, Subscription>>>,
    next: Arc<AtomicU64>,
}

impl LogBroker {
    /// A new subscription answered by the nodes in `asked`, each for its listed tasks. The
    /// reader's stream ends once every one of them finished (at once without nodes).
    pub fn open(
        &self,
        names: HashMap<String, (String, String)>,
        asked: &[(String, Vec<String>)],
    ) -> (u64, mpsc::Receiver<Result<LogLine, Status>>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::channel(1024);
        if !asked.is_empty() {
            let asked: HashMap<String, HashSet<String>> = asked
                .iter()
                .map(|(node, tasks)| (node.clone(), tasks.iter().cloned().collect()))
                .collect();
            let pending = asked.keys().cloned().collect();
            self.subs.lock().expect("lock").insert(
                id,
                Subscription {
                    tx,
                    names,
                    asked,
                    pending,
                },
            );
        }
        (id, rx)
    }

    pub fn publisher(&self, id: u64, node_id: &str) -> Publisher {
        match self.subs.lock().expect("lock").get(&id) {
            None => Publisher::Gone,
            Some(sub) if sub.asked.contains_key(node_id) => Publisher::Allowed,
            Some(_) => Publisher::NotAsked,
        }
    }

    /// Passes on a line of `node_id`'s task `task_id`.
    pub async fn line(
        &self,
        id: u64,
        node_id: &str,
        task_id: String,
        written: Written,
    ) -> Delivery {
        let (tx, task_name, node_name) = {
            let subs = self.subs.lock().expect("lock");
            let Some(sub) = subs.get(&id) else {
                return Delivery::Gone;
            };
            // The tasks were listed per node from the store, so a task in this node's set
            // is also one that runs on it.
            if !sub.asked.get(node_id).is_some_and(|t| t.contains(&task_id)) {
                return Delivery::NotAsked;
            }
            let (t, n) = sub.names.get(&task_id).cloned().unwrap_or_default();
            (sub.tx.clone(), t, n)
        };
        match tx
            .send(Ok(LogLine {
                task_id,
                task_name,
                node_name,
                line: written.line,
                time: written.time,
                stream: written.stream,
            }))
            .await
        {
            Ok(()) => Delivery::Sent,
            Err(_) => Delivery::Gone,
        }
    }

    /// `node_id` finished; the last of the asked nodes closes the reader's stream. Other
    /// nodes count for nothing.
    pub fn finished(&self, id: u64, node_id: &str) {
        let mut subs = self.subs.lock().expect("lock");
        if let Some(sub) = subs.get_mut(&id) {
            sub.pending.remove(node_id);
            if sub.pending.is_empty() {
                subs.remove(&id);
            }
        }
    }
}

/// Counts an asked node's publisher as finished however its stream ends.
pub struct Finish {
    pub broker: LogBroker,
    pub id: u64,
    pub node_id: String,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.broker.finished(self.id, &self.node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Written {
        Written {
            line: line.into(),
            time: None,
            stream: Stream::Stdout,
        }
    }

    fn broker() -> (LogBroker, u64, mpsc::Receiver<Result<LogLine, Status>>) {
        let b = LogBroker::default();
        let names = HashMap::from([("t1".to_string(), ("web.1".into(), "host-n1".into()))]);
        let (id, rx) = b.open(
            names,
            &[
                ("n1".into(), vec!["t1".into()]),
                ("n2".into(), vec!["t2".into()]),
            ],
        );
        (b, id, rx)
    }

    #[tokio::test]
    async fn only_asked_nodes_publish_and_only_their_own_tasks() {
        let (b, id, mut rx) = broker();
        assert_eq!(b.publisher(id, "n1"), Publisher::Allowed);
        assert_eq!(b.publisher(id, "n3"), Publisher::NotAsked);
        assert_eq!(b.publisher(id + 1, "n1"), Publisher::Gone);
        // n3 was not asked at all; n2 was asked, but for t2, not n1's t1.
        assert_eq!(
            b.line(id, "n3", "t1".into(), w("forged")).await,
            Delivery::NotAsked
        );
        assert_eq!(
            b.line(id, "n2", "t1".into(), w("forged")).await,
            Delivery::NotAsked
        );
        assert_eq!(
            b.line(id, "n1", "t1".into(), w("hello")).await,
            Delivery::Sent
        );
        let got = rx.recv().await.unwrap().unwrap();
        assert_eq!(
            (got.line.as_str(), got.task_name.as_str()),
            ("hello", "web.1")
        );
        assert!(rx.try_recv().is_err(), "nothing forged reached the reader");
    }

    #[tokio::test]
    async fn the_stream_ends_when_every_asked_node_finished_not_before() {
        let (b, id, mut rx) = broker();
        b.finished(id, "n3");
        b.finished(id, "n3");
        b.finished(id, "n1");
        b.finished(id, "n1");
        assert_eq!(b.publisher(id, "n2"), Publisher::Allowed, "n2 still sends");
        assert_eq!(
            b.line(id, "n2", "t2".into(), w("late")).await,
            Delivery::Sent
        );
        b.finished(id, "n2");
        assert_eq!(rx.recv().await.unwrap().unwrap().line, "late");
        assert!(
            rx.recv().await.is_none(),
            "closed after the last asked node"
        );
    }
}

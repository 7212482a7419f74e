//! Routes task output from the nodes that publish it to the `service logs` reader.

use shoal_api::logs::{LogLine, Stream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tonic::Status;

struct Subscription {
    tx: mpsc::Sender<Result<LogLine, Status>>,
    /// Task id to (task name, node name).
    names: HashMap<String, (String, String)>,
    /// Nodes still sending.
    pending: usize,
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
    /// A new subscription answered by `nodes` publishers. Without followers or nodes the
    /// reader's stream ends once every node said it is done.
    pub fn open(
        &self,
        names: HashMap<String, (String, String)>,
        nodes: usize,
        _follow: bool,
    ) -> (u64, mpsc::Receiver<Result<LogLine, Status>>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::channel(1024);
        if nodes > 0 {
            self.subs.lock().expect("lock").insert(
                id,
                Subscription {
                    tx,
                    names,
                    pending: nodes,
                },
            );
        }
        (id, rx)
    }

    /// Passes a line on; false when the reader is gone.
    pub async fn line(&self, id: u64, task_id: String, written: Written) -> bool {
        let (tx, task_name, node_name) = {
            let subs = self.subs.lock().expect("lock");
            let Some(sub) = subs.get(&id) else {
                return false;
            };
            let (t, n) = sub.names.get(&task_id).cloned().unwrap_or_default();
            (sub.tx.clone(), t, n)
        };
        tx.send(Ok(LogLine {
            task_id,
            task_name,
            node_name,
            line: written.line,
            time: written.time,
            stream: written.stream,
        }))
        .await
        .is_ok()
    }

    /// One node finished; the last one closes the reader's stream.
    pub fn finished(&self, id: u64) {
        let mut subs = self.subs.lock().expect("lock");
        if let Some(sub) = subs.get_mut(&id) {
            sub.pending = sub.pending.saturating_sub(1);
            if sub.pending == 0 {
                subs.remove(&id);
            }
        }
    }
}

/// Counts a publisher as finished however its stream ends.
pub struct Finish {
    pub broker: LogBroker,
    pub id: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.broker.finished(self.id);
    }
}

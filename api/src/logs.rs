//! Task output: `service logs` requests, the subscriptions the leader sends to nodes, and
//! what nodes publish back.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    /// Service id, id prefix or name.
    pub service: String,
    pub follow: bool,
    /// Last lines of each task; None for all.
    pub tail: Option<u64>,
}

/// One line of a task's output, as the CLI prints it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub task_id: String,
    pub task_name: String,
    pub node_name: String,
    pub line: String,
}

/// Sent by the leader in a node's session: publish these tasks' output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogSubscription {
    pub id: u64,
    pub task_ids: Vec<String>,
    pub follow: bool,
    pub tail: Option<u64>,
}

/// A node's stream of answers to one subscription; `Start` comes first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "Kind", content = "Value")]
pub enum PublishItem {
    Start {
        subscription: u64,
    },
    Line {
        task_id: String,
        line: String,
    },
    /// Everything asked for was sent (never sent when following).
    Done,
}

//! `-f/--filter KEY=VALUE` for the list commands, with Docker's keys and meanings
//! (moby `daemon/cluster/filters.go`, swarmkit's list filters, docker/cli `opts`).
//!
//! Values of one key OR together, different keys AND; `label` filters AND together, as
//! swarmkit's label match does. An unknown key is refused as the daemon refuses it
//! ("invalid filter 'foo'"). The daemon lists everything; these pure functions pick.

use shoal_api::control::{ServiceView, TaskView};
use shoal_api::objects::{Network, Node, NodeRole, ServiceMode};
use shoal_api::secrets::Kind;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "invalid argument {arg:?} for \"-f, --filter\" flag: bad format of filter (expected name=value)"
    )]
    BadFormat { arg: String },
    #[error("invalid filter '{key}'")]
    UnknownKey { key: String },
    #[error("invalid filter '{key}={value}': use {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// Parsed `-f` flags: key -> the values given for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    map: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Docker's `FilterOpt`: `key=value`, the key lower-cased, both trimmed; an empty
    /// flag is ignored.
    pub fn parse(args: &[String]) -> Result<Filters, FilterError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for arg in args {
            if arg.is_empty() {
                continue;
            }
            let Some((key, value)) = arg.split_once('=') else {
                return Err(FilterError::BadFormat { arg: arg.clone() });
            };
            map.entry(key.trim().to_lowercase())
                .or_default()
                .push(value.trim().to_string());
        }
        Ok(Filters { map })
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn check(&self, accepted: &[&str]) -> Result<(), FilterError> {
        match self.map.keys().find(|k| !accepted.contains(&k.as_str())) {
            Some(key) => Err(FilterError::UnknownKey { key: key.clone() }),
            None => Ok(()),
        }
    }

    fn check_values(
        &self,
        key: &str,
        allowed: &[&str],
        expected: &'static str,
    ) -> Result<(), FilterError> {
        for v in self.values(key) {
            if !allowed.contains(&v.to_lowercase().as_str()) {
                return Err(FilterError::BadValue {
                    key: key.into(),
                    value: v.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }

    fn values(&self, key: &str) -> &[String] {
        self.map.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// True when the key is not given, or when one of its values matches.
    fn any(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        let values = self.values(key);
        values.is_empty() || values.iter().any(|v| matches(v))
    }

    /// `label=KEY` or `label=KEY=VALUE`: every one given must match.
    fn labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

/// `service ls` and `stack services`: id and name prefixes, labels, mode.
#[derive(Debug, Clone)]
pub struct ServiceFilter(Filters);

impl ServiceFilter {
    pub fn new(filters: Filters) -> Result<ServiceFilter, FilterError> {
        filters.check(&["id", "name", "label", "mode"])?;
        filters.check_values("mode", &["replicated", "global"], "replicated or global")?;
        Ok(ServiceFilter(filters))
    }

    pub fn matches(&self, v: &ServiceView) -> bool {
        let f = &self.0;
        let s = &v.service;
        let mode = match s.spec.mode {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global {} => "global",
        };
        f.any("id", |p| s.id.starts_with(p))
            && f.any("name", |p| s.spec.name.starts_with(p))
            && f.labels("label", &s.spec.labels)
            && f.any("mode", |m| m.eq_ignore_ascii_case(mode))
    }
}

/// `node ls`: id and name (hostname) prefixes, labels, role, membership.
///
/// Docker's `label` reads engine labels, which shoal nodes do not have; here both
/// `label` and `node.label` read the node's own labels (`node update --label-add`).
#[derive(Debug, Clone)]
pub struct NodeFilter(Filters);

impl NodeFilter {
    pub fn new(filters: Filters) -> Result<NodeFilter, FilterError> {
        filters.check(&["id", "name", "label", "node.label", "role", "membership"])?;
        filters.check_values("role", &["manager", "worker"], "manager or worker")?;
        filters.check_values(
            "membership",
            &["accepted", "pending"],
            "accepted or pending",
        )?;
        Ok(NodeFilter(filters))
    }

    pub fn matches(&self, n: &Node) -> bool {
        let f = &self.0;
        let role = match n.spec.role {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        };
        f.any("id", |p| n.id.starts_with(p))
            && f.any("name", |p| {
                n.description.hostname.starts_with(p)
                    || (!n.spec.name.is_empty() && n.spec.name.starts_with(p))
            })
            && f.labels("label", &n.spec.labels)
            && f.labels("node.label", &n.spec.labels)
            && f.any("role", |r| r.eq_ignore_ascii_case(role))
            // A shoal node is in the store only once its join token was accepted.
            && f.any("membership", |m| m.eq_ignore_ascii_case("accepted"))
    }
}

/// What task filters need besides the task: this node's id (`node=self`) and the labels
/// of the tasks' services (`label` matches the service's labels, as swarmkit does).
#[derive(Debug, Clone, Default)]
pub struct TaskContext<'a> {
    pub self_id: &'a str,
    pub service_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

/// `service ps`, `node ps`, `stack ps`: id and name prefixes, labels, service, node,
/// desired state.
#[derive(Debug, Clone)]
pub struct TaskFilter(Filters);

const TASK_STATES: &[&str] = &[
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "orphaned",
];

impl TaskFilter {
    pub fn new(filters: Filters) -> Result<TaskFilter, FilterError> {
        filters.check(&["id", "name", "label", "service", "node", "desired-state"])?;
        filters.check_values(
            "desired-state",
            TASK_STATES,
            "running, shutdown or accepted",
        )?;
        Ok(TaskFilter(filters))
    }

    /// Whether `node=self` was asked for (the caller then looks up this node's id).
    pub fn wants_self(&self) -> bool {
        self.0.values("node").iter().any(|v| v == "self")
    }

    /// Whether `label=` was given (the caller then needs the services' labels).
    pub fn wants_labels(&self) -> bool {
        !self.0.values("label").is_empty()
    }

    pub fn matches(&self, t: &TaskView, cx: &TaskContext<'_>) -> bool {
        let f = &self.0;
        let task = &t.task;
        let no_labels = BTreeMap::new();
        let labels = cx
            .service_labels
            .get(task.service_id.as_str())
            .copied()
            .unwrap_or(&no_labels);
        f.any("id", |p| task.id.starts_with(p))
            && f.any("name", |p| t.name.starts_with(p))
            && f.labels("label", labels)
            && f.any("service", |s| {
                task.service_id == s || (!t.service_name.is_empty() && t.service_name == s)
            })
            && f.any("node", |n| {
                task.node_id == n
                    || (!t.node_name.is_empty() && t.node_name == n)
                    || (n == "self" && !cx.self_id.is_empty() && task.node_id == cx.self_id)
            })
            && f.any("desired-state", |d| {
                d.eq_ignore_ascii_case(&task.desired_state.to_string())
            })
    }
}

/// `network ls`: id and name (parts of them, as Docker matches), labels, driver, scope,
/// type. Every shoal network is a custom, swarm-scoped overlay.
#[derive(Debug, Clone)]
pub struct NetworkFilter(Filters);

impl NetworkFilter {
    pub fn new(filters: Filters) -> Result<NetworkFilter, FilterError> {
        filters.check(&["id", "name", "label", "driver", "scope", "type"])?;
        filters.check_values(
            "scope",
            &["swarm", "global", "local"],
            "swarm, global or local",
        )?;
        filters.check_values("type", &["custom", "builtin"], "custom or builtin")?;
        Ok(NetworkFilter(filters))
    }

    pub fn matches(&self, n: &Network) -> bool {
        let f = &self.0;
        let driver = match n.spec.driver_configuration.name.as_str() {
            "" => "overlay",
            d => d,
        };
        f.any("id", |p| n.id.contains(p))
            && f.any("name", |p| n.spec.name.contains(p))
            && f.labels("label", &n.spec.labels)
            && f.any("driver", |d| d == driver)
            && f.any("scope", |s| s.eq_ignore_ascii_case("swarm"))
            && f.any("type", |t| t.eq_ignore_ascii_case("custom"))
    }
}

/// `secret ls` and `config ls`: id and name prefixes and labels, as swarmkit's list
/// filters; secrets also take `names` (exact names), as the daemon accepts it for them.
#[derive(Debug, Clone)]
pub struct FileFilter(Filters);

impl FileFilter {
    pub fn new(kind: Kind, filters: Filters) -> Result<FileFilter, FilterError> {
        match kind {
            Kind::Secret => filters.check(&["id", "name", "names", "label"])?,
            Kind::Config => filters.check(&["id", "name", "label"])?,
        }
        Ok(FileFilter(filters))
    }

    pub fn matches(&self, id: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let f = &self.0;
        f.any("id", |p| id.starts_with(p))
            && f.any("name", |p| name.starts_with(p))
            && f.any("names", |n| name == n)
            && f.labels("label", labels)
    }
}

#[cfg(test)]
mod tests;

//! What the list and inspect commands print once `--filter`, `--format` and `-q` are
//! taken into account: the rows Docker's formatters give templates (docker/cli
//! `cli/command/{service,task,node,network,stack,secret,config}/formatter.go`), and the
//! choice between the command's own table, its ids, and a template.
//!
//! Each command checks its flags with `new` before it asks the daemon anything, then
//! `render`s what it got.

use crate::daemon::Daemon;
use crate::filter::{
    FileFilter, FilterError, Filters, NetworkFilter, NodeFilter, ServiceFilter, TaskContext,
    TaskFilter,
};
use crate::format::{ago, capitalize, id_column, json, natural_cmp};
use crate::secret::FileObject;
use crate::service::render;
use crate::stack::NAMESPACE_LABEL;
use crate::tasks::{self, TaskTable};
use crate::template::{ListFormat, Template, TemplateError, labels_text, labels_value, row};
use anyhow::Result;
use clap::Args;
use gtmpl::Value;
use serde::Serialize;
use shoal_api::control::{ServiceView, TaskView};
use shoal_api::objects::{Network, Node, PortConfig};
use shoal_api::secrets::Kind;
use std::collections::BTreeMap;

/// `-f/--filter` and `--format`, as every list command takes them.
#[derive(Args, Debug, Clone, Default)]
pub struct ListFlags {
    /// Filter output based on conditions provided (KEY=VALUE)
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format output: "table", "table TEMPLATE", "json", or a Go template
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

fn template_row<const N: usize>(headers: &[(&'static str, &str); N], cells: [String; N]) -> Value {
    row(headers
        .iter()
        .zip(cells)
        .map(|((field, _), cell)| (*field, Value::from(cell))))
}

// ---- service ls, stack services ----

pub struct ServiceLs {
    quiet: bool,
    filter: ServiceFilter,
    format: ListFormat,
}

impl ServiceLs {
    pub fn new(quiet: bool, flags: &ListFlags) -> Result<ServiceLs, ListError> {
        Ok(ServiceLs {
            quiet,
            filter: ServiceFilter::new(Filters::parse(&flags.filter)?)?,
            format: ListFormat::parse(flags.format.as_deref())?,
        })
    }

    pub fn render(&self, services: &[ServiceView]) -> Result<String, ListError> {
        let picked: Vec<ServiceView> = services
            .iter()
            .filter(|v| self.filter.matches(v))
            .cloned()
            .collect();
        Ok(match &self.format {
            ListFormat::Default if self.quiet => render::render_service_ids(&picked),
            ListFormat::Default => render::render_services(&picked),
            ListFormat::Template(t) => {
                let rows: Vec<Value> = render::sorted(&picked)
                    .into_iter()
                    .map(|v| template_row(&render::HEADERS, render::ls_cells(v)))
                    .collect();
                t.render_rows(&render::HEADERS, &rows)?
            }
        })
    }
}

// ---- service ps, node ps, stack ps ----

pub struct TaskPs {
    quiet: bool,
    no_trunc: bool,
    filter: TaskFilter,
    format: ListFormat,
}

impl TaskPs {
    pub fn new(quiet: bool, no_trunc: bool, flags: &ListFlags) -> Result<TaskPs, ListError> {
        Ok(TaskPs {
            quiet,
            no_trunc,
            filter: TaskFilter::new(Filters::parse(&flags.filter)?)?,
            format: ListFormat::parse(flags.format.as_deref())?,
        })
    }

    /// Filters and prints `tasks`; `services` gives their labels (`label=`) and host
    /// ports; this node's id is asked for only when `node=self` needs it.
    pub async fn render(
        &self,
        daemon: &mut Daemon,
        tasks: &[TaskView],
        services: &[ServiceView],
        now: i128,
    ) -> Result<String> {
        let self_id = if self.filter.wants_self() {
            crate::resolve::self_id(daemon).await?
        } else {
            String::new()
        };
        Ok(self.render_with(tasks, services, &self_id, now)?)
    }

    /// The pure part of `render`.
    pub fn render_with(
        &self,
        tasks: &[TaskView],
        services: &[ServiceView],
        self_id: &str,
        now: i128,
    ) -> Result<String, ListError> {
        let mut cx = TaskContext {
            self_id,
            ..TaskContext::default()
        };
        for v in services {
            cx.service_labels
                .insert(v.service.id.as_str(), &v.service.spec.labels);
        }
        let picked: Vec<TaskView> = tasks
            .iter()
            .filter(|t| self.filter.matches(t, &cx))
            .cloned()
            .collect();
        let host_ports: BTreeMap<String, Vec<PortConfig>> = services
            .iter()
            .map(|v| (v.service.id.clone(), tasks::host_ports(v)))
            .collect();
        let table = TaskTable {
            no_trunc: self.no_trunc,
            now,
            host_ports: &host_ports,
        };
        Ok(match &self.format {
            ListFormat::Default if self.quiet => tasks::render_ids(&picked, self.no_trunc),
            ListFormat::Default => tasks::render(&picked, &table),
            ListFormat::Template(t) => {
                let rows: Vec<Value> = tasks::rows(&picked, &table, t.is_table())
                    .into_iter()
                    .map(|cells| template_row(&tasks::HEADERS, cells))
                    .collect();
                t.render_rows(&tasks::HEADERS, &rows)?
            }
        })
    }
}

// ---- node ls ----

pub const NODE_HEADERS: [(&str, &str); 8] = [
    ("ID", "ID"),
    ("Self", ""),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("TLSStatus", "TLS STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
];

/// Docker's `node ls` row. shoal has one root CA for the life of a swarm, so every node
/// certificate is signed by the current root: TLSStatus is "Ready". shoald is not a Docker
/// engine: EngineVersion is empty, as Docker shows it for a node without one.
pub fn node_row(n: &Node, self_id: &str) -> Value {
    row([
        ("ID", Value::from(n.id.as_str())),
        ("Self", Value::Bool(!self_id.is_empty() && n.id == self_id)),
        ("Hostname", Value::from(n.description.hostname.as_str())),
        (
            "Status",
            Value::from(capitalize(&n.status.state.to_string())),
        ),
        (
            "Availability",
            Value::from(capitalize(&n.spec.availability.to_string())),
        ),
        ("ManagerStatus", Value::from(crate::node::manager_status(n))),
        ("TLSStatus", Value::from("Ready")),
        ("EngineVersion", Value::from("")),
    ])
}

pub struct NodeLs {
    quiet: bool,
    filter: NodeFilter,
    format: ListFormat,
}

impl NodeLs {
    pub fn new(quiet: bool, flags: &ListFlags) -> Result<NodeLs, ListError> {
        Ok(NodeLs {
            quiet,
            filter: NodeFilter::new(Filters::parse(&flags.filter)?)?,
            format: ListFormat::parse(flags.format.as_deref())?,
        })
    }

    /// Whether the output shows which node is this one (then the caller finds out).
    pub fn needs_self(&self) -> bool {
        !(self.quiet && matches!(self.format, ListFormat::Default))
    }

    pub fn render(&self, nodes: &[Node], self_id: &str) -> Result<String, ListError> {
        let picked: Vec<Node> = nodes
            .iter()
            .filter(|n| self.filter.matches(n))
            .cloned()
            .collect();
        Ok(match &self.format {
            ListFormat::Default if self.quiet => crate::node::render_node_ids(&picked),
            ListFormat::Default => crate::node::render_nodes(&picked, self_id),
            ListFormat::Template(t) => {
                let rows: Vec<Value> = crate::node::sorted(&picked)
                    .into_iter()
                    .map(|n| node_row(n, self_id))
                    .collect();
                t.render_rows(&NODE_HEADERS, &rows)?
            }
        })
    }
}

// ---- network ls ----

pub const NETWORK_HEADERS: [(&str, &str); 9] = [
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv4", "IPV4"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED AT"),
];

/// Docker's `network ls` row: shoal networks are IPv4 overlays of swarm scope.
pub fn network_row(n: &Network, no_trunc: bool) -> Value {
    let driver = match n.spec.driver_configuration.name.as_str() {
        "" => "overlay",
        d => d,
    };
    row([
        ("ID", Value::from(id_column(&n.id, no_trunc))),
        ("Name", Value::from(n.spec.name.as_str())),
        ("Driver", Value::from(driver)),
        ("Scope", Value::from("swarm")),
        ("IPv4", Value::from("true")),
        ("IPv6", Value::from("false")),
        ("Internal", Value::from(n.spec.internal.to_string())),
        ("Labels", Value::from(labels_text(&n.spec.labels))),
        ("CreatedAt", Value::from(go_time(&n.created_at))),
        (crate::template::LABELS_KEY, labels_value(&n.spec.labels)),
    ])
}

/// Go's `time.Time.String()` of an RFC 3339 timestamp: `2024-05-01 12:00:00.5 +0000 UTC`.
pub fn go_time(rfc3339: &str) -> String {
    let Some(nanos) = shoal_api::parse_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return rfc3339.to_string();
    };
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.nanosecond() != 0 {
        let frac = format!("{:09}", t.nanosecond());
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

pub struct NetworkLs {
    quiet: bool,
    no_trunc: bool,
    filter: NetworkFilter,
    format: ListFormat,
}

impl NetworkLs {
    pub fn new(quiet: bool, no_trunc: bool, flags: &ListFlags) -> Result<NetworkLs, ListError> {
        Ok(NetworkLs {
            quiet,
            no_trunc,
            filter: NetworkFilter::new(Filters::parse(&flags.filter)?)?,
            format: ListFormat::parse(flags.format.as_deref())?,
        })
    }

    pub fn render(&self, networks: &[Network]) -> Result<String, ListError> {
        let picked: Vec<Network> = networks
            .iter()
            .filter(|n| self.filter.matches(n))
            .cloned()
            .collect();
        Ok(match &self.format {
            ListFormat::Default if self.quiet => {
                crate::network::render_network_ids(&picked, self.no_trunc)
            }
            ListFormat::Default => crate::network::render_networks(&picked, self.no_trunc),
            ListFormat::Template(t) => {
                let rows: Vec<Value> = crate::network::sorted(&picked)
                    .into_iter()
                    .map(|n| network_row(n, self.no_trunc))
                    .collect();
                t.render_rows(&NETWORK_HEADERS, &rows)?
            }
        })
    }
}

// ---- secret ls, config ls ----

pub const SECRET_HEADERS: [(&str, &str); 6] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("CreatedAt", "CREATED"),
    ("UpdatedAt", "UPDATED"),
    ("Labels", "LABELS"),
];

/// A config has no driver.
pub const CONFIG_HEADERS: [(&str, &str); 5] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("CreatedAt", "CREATED"),
    ("UpdatedAt", "UPDATED"),
    ("Labels", "LABELS"),
];

pub fn file_headers(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Secret => &SECRET_HEADERS,
        Kind::Config => &CONFIG_HEADERS,
    }
}

/// Docker's `secret ls` / `config ls` cells, as `file_headers` names them: full ids, and
/// times as "N units ago".
pub fn file_cells(kind: Kind, o: &dyn FileObject, now: i128) -> Vec<(&'static str, String)> {
    let mut cells = vec![("ID", o.id().to_string()), ("Name", o.name().to_string())];
    if kind == Kind::Secret {
        cells.push(("Driver", o.driver().to_string()));
    }
    cells.extend([
        ("CreatedAt", ago(o.created_at(), now)),
        ("UpdatedAt", ago(o.updated_at(), now)),
        ("Labels", labels_text(o.labels())),
    ]);
    cells
}

pub fn file_row(kind: Kind, o: &dyn FileObject, now: i128) -> Value {
    row(file_cells(kind, o, now)
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .chain([(crate::template::LABELS_KEY, labels_value(o.labels()))]))
}

pub struct FileLs {
    kind: Kind,
    quiet: bool,
    filter: FileFilter,
    format: ListFormat,
}

impl FileLs {
    pub fn new(kind: Kind, quiet: bool, flags: &ListFlags) -> Result<FileLs, ListError> {
        Ok(FileLs {
            kind,
            quiet,
            filter: FileFilter::new(kind, Filters::parse(&flags.filter)?)?,
            format: ListFormat::parse(flags.format.as_deref())?,
        })
    }

    /// Sorted by name in natural order (`s2` before `s10`), as docker/cli sorts them.
    pub fn render<T: FileObject>(&self, objects: &[T], now: i128) -> Result<String, ListError> {
        let mut picked: Vec<&dyn FileObject> = objects
            .iter()
            .filter(|o| self.filter.matches(o.id(), o.name(), o.labels()))
            .map(|o| o as &dyn FileObject)
            .collect();
        picked.sort_by(|a, b| natural_cmp(a.name(), b.name()).then_with(|| a.id().cmp(b.id())));
        Ok(match &self.format {
            ListFormat::Default if self.quiet => {
                picked.iter().map(|o| format!("{}\n", o.id())).collect()
            }
            ListFormat::Default => {
                // Docker's default table has every column but Labels.
                let shown = |k: &str| k != "Labels";
                let headers = file_headers(self.kind).iter().filter(|(k, _)| shown(k));
                let mut table = crate::table::Table::new(headers.map(|(_, title)| *title));
                for o in &picked {
                    let cells = file_cells(self.kind, *o, now);
                    table.row(cells.into_iter().filter(|(k, _)| shown(k)).map(|(_, v)| v));
                }
                table.render()
            }
            ListFormat::Template(t) => {
                let rows: Vec<Value> = picked
                    .iter()
                    .map(|o| file_row(self.kind, *o, now))
                    .collect();
                t.render_rows(file_headers(self.kind), &rows)?
            }
        })
    }
}

// ---- stack ls ----

pub const STACK_HEADERS: [(&str, &str); 2] = [("Name", "NAME"), ("Services", "SERVICES")];

/// `stack ls --format` (Docker's `stack ls` has no filter).
pub struct StackLs {
    format: ListFormat,
}

impl StackLs {
    pub fn new(format: Option<&str>) -> Result<StackLs, ListError> {
        Ok(StackLs {
            format: ListFormat::parse(format)?,
        })
    }

    /// The template's output, or None for the command's own table.
    pub fn render(&self, services: &[ServiceView]) -> Result<Option<String>, ListError> {
        let ListFormat::Template(t) = &self.format else {
            return Ok(None);
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in services {
            if let Some(s) = v.service.spec.labels.get(NAMESPACE_LABEL) {
                *counts.entry(s).or_default() += 1;
            }
        }
        let rows: Vec<Value> = counts
            .into_iter()
            .map(|(name, n)| {
                row([
                    ("Name", Value::from(name)),
                    ("Services", Value::from(n.to_string())),
                ])
            })
            .collect();
        Ok(Some(t.render_rows(&STACK_HEADERS, &rows)?))
    }
}

// ---- inspect ----

/// `inspect [-f FORMAT]`: indented JSON (no format, or `json`), or the template run over
/// each object.
pub struct Inspect {
    template: Option<Template>,
}

impl Inspect {
    pub fn new(format: Option<&str>) -> Result<Inspect, ListError> {
        Ok(Inspect {
            template: match format {
                None | Some("") | Some("json") => None,
                Some(f) => Some(Template::inspect(f)?),
            },
        })
    }

    pub fn is_template(&self) -> bool {
        self.template.is_some()
    }

    pub fn render<T: Serialize>(&self, objects: &[T]) -> Result<String, ListError> {
        let Some(t) = &self.template else {
            return Ok(json(objects));
        };
        Ok(t.render_objects(objects)?)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

#[cfg(test)]
mod tests;

//! `shoal node ...`: list, inspect, promote, demote, update and remove nodes.

use crate::daemon::Daemon;
use crate::format::{capitalize, field, now_nanos};
use crate::listing::{Inspect, ListFlags, NodeLs, TaskPs};
use crate::service::spec::parse_label;
use crate::table::Table;
use crate::{Output, print, resolve};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::control::{ControlRequest, NodeUpdate};
use shoal_api::objects::{Availability, Node, NodeRole};

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List the nodes of the swarm
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        list: ListFlags,
    },
    /// Display detailed information on one or more nodes ("self" is this node)
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go template (or "json")
        #[arg(short, long, value_name = "FORMAT")]
        format: Option<String>,
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Promote one or more nodes to manager in the swarm
    Promote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Demote one or more managers to worker in the swarm
    Demote {
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm {
        /// Force-remove a node from the swarm
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes (default: this node)
    Ps {
        /// Only display task IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate output
        #[arg(long)]
        no_trunc: bool,
        #[command(flatten)]
        list: ListFlags,
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Update a node
    Update(UpdateArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Worker,
    Manager,
}

impl From<RoleArg> for NodeRole {
    fn from(r: RoleArg) -> NodeRole {
        match r {
            RoleArg::Worker => NodeRole::Worker,
            RoleArg::Manager => NodeRole::Manager,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvailabilityArg {
    Active,
    Pause,
    Drain,
}

impl From<AvailabilityArg> for Availability {
    fn from(a: AvailabilityArg) -> Availability {
        match a {
            AvailabilityArg::Active => Availability::Active,
            AvailabilityArg::Pause => Availability::Pause,
            AvailabilityArg::Drain => Availability::Drain,
        }
    }
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Availability of the node
    #[arg(long, value_enum)]
    pub availability: Option<AvailabilityArg>,
    /// Role of the node
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// Add or update a node label (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a node label if exists
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    pub node: String,
}

pub async fn run(cmd: NodeCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        NodeCommand::Ls { quiet, list } => {
            let ls = NodeLs::new(quiet, &list)?;
            let nodes = daemon.nodes().await?;
            let me = if ls.needs_self() {
                daemon.info().await?.node_id
            } else {
                String::new()
            };
            print(out, &ls.render(&nodes, &me)?)
        }
        NodeCommand::Inspect {
            pretty,
            format,
            nodes,
        } => {
            let inspect = Inspect::new(format.as_deref())?;
            let mut found = Vec::new();
            for n in resolve::node_refs(daemon, &nodes).await? {
                found.push(daemon.node(&n).await?);
            }
            if pretty {
                let text: Vec<String> = found.iter().map(render_pretty).collect();
                print(out, &text.join("\n"))
            } else {
                print(out, &inspect.render(&found)?)
            }
        }
        NodeCommand::Promote { nodes } => change_role(&nodes, NodeRole::Manager, daemon, out).await,
        NodeCommand::Demote { nodes } => change_role(&nodes, NodeRole::Worker, daemon, out).await,
        NodeCommand::Rm { force, nodes } => {
            let refs = resolve::node_refs(daemon, &nodes).await?;
            let mut ids = Vec::new();
            for n in &refs {
                ids.push(daemon.node(n).await?.id);
            }
            for (name, id) in nodes.iter().zip(ids) {
                daemon
                    .done(ControlRequest::NodeRemove { node: id, force })
                    .await?;
                print(out, &format!("{name}\n"))?;
            }
            Ok(())
        }
        NodeCommand::Ps {
            quiet,
            no_trunc,
            list,
            nodes,
        } => {
            let ps = TaskPs::new(quiet, no_trunc, &list)?;
            let nodes = if nodes.is_empty() {
                vec!["self".to_string()]
            } else {
                nodes
            };
            let mut all = Vec::new();
            let mut seen = Vec::new();
            for n in resolve::node_refs(daemon, &nodes).await? {
                let node = daemon.node(&n).await?;
                if seen.contains(&node.id) {
                    continue;
                }
                seen.push(node.id.clone());
                all.extend(daemon.tasks(None, Some(node.id)).await?);
            }
            let services = daemon.services().await?;
            print(out, &ps.render(daemon, &all, &services, now_nanos()).await?)
        }
        NodeCommand::Update(args) => {
            let update = node_update(&args)?;
            let node = resolve::node_refs(daemon, std::slice::from_ref(&args.node)).await?;
            let update = NodeUpdate {
                node: node.into_iter().next().unwrap_or_default(),
                ..update
            };
            daemon.done(ControlRequest::NodeUpdate(update)).await?;
            print(out, &format!("{}\n", args.node))
        }
    }
}

/// Checks the `node update` flags and builds the request (node reference as given).
pub fn node_update(args: &UpdateArgs) -> Result<NodeUpdate> {
    let mut labels_add = std::collections::BTreeMap::new();
    for l in &args.label_add {
        let (k, v) = parse_label("--label-add", l)?;
        labels_add.insert(k, v);
    }
    Ok(NodeUpdate {
        node: args.node.clone(),
        version: None,
        availability: args.availability.map(Into::into),
        role: args.role.map(Into::into),
        labels_add,
        labels_rm: args.label_rm.clone(),
    })
}

async fn change_role(
    nodes: &[String],
    role: NodeRole,
    daemon: &mut Daemon,
    out: &mut Output,
) -> Result<()> {
    // Look every node up first so that a typo changes nothing.
    let mut found = Vec::new();
    for n in resolve::node_refs(daemon, nodes).await? {
        found.push(daemon.node(&n).await?);
    }
    for (name, node) in nodes.iter().zip(found) {
        if node.spec.role == role {
            print(out, &format!("Node {name} is already a {role}.\n"))?;
            continue;
        }
        let update = NodeUpdate {
            node: node.id.clone(),
            role: Some(role),
            ..NodeUpdate::default()
        };
        daemon.done(ControlRequest::NodeUpdate(update)).await?;
        let line = match role {
            NodeRole::Manager => format!("Node {name} promoted to a manager in the swarm.\n"),
            NodeRole::Worker => format!("Manager {name} demoted in the swarm.\n"),
        };
        print(out, &line)?;
    }
    Ok(())
}

/// Docker's MANAGER STATUS: Leader, Reachable, Unreachable, or empty for workers.
pub fn manager_status(node: &Node) -> String {
    match &node.manager_status {
        None => String::new(),
        Some(m) if m.leader => "Leader".into(),
        Some(m) => capitalize(&m.reachability),
    }
}

pub fn sorted(nodes: &[Node]) -> Vec<&Node> {
    let mut out: Vec<&Node> = nodes.iter().collect();
    out.sort_by(|a, b| (a.hostname(), &a.id).cmp(&(b.hostname(), &b.id)));
    out
}

/// `node ls`, by hostname, this node's id marked with " *" as Docker does.
pub fn render_nodes(nodes: &[Node], self_id: &str) -> String {
    let mut table = Table::new(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"]);
    for n in sorted(nodes) {
        let id = if !self_id.is_empty() && n.id == self_id {
            format!("{} *", n.id)
        } else {
            n.id.clone()
        };
        table.row([
            id,
            n.hostname().to_string(),
            capitalize(&n.status.state.to_string()),
            capitalize(&n.spec.availability.to_string()),
            manager_status(n),
        ]);
    }
    table.render()
}

pub fn render_node_ids(nodes: &[Node]) -> String {
    sorted(nodes)
        .iter()
        .map(|n| format!("{}\n", n.id))
        .collect()
}

/// A human summary of one node, after Docker's `node inspect --pretty`.
/// Column of the values in `--pretty` output.
const W: usize = 22;

pub fn render_pretty(n: &Node) -> String {
    let mut o = String::new();
    field(&mut o, W, "ID", &n.id);
    if !n.spec.name.is_empty() {
        field(&mut o, W, "Name", &n.spec.name);
    }
    if !n.spec.labels.is_empty() {
        field(&mut o, W, "Labels", "");
        for (k, v) in &n.spec.labels {
            o.push_str(&format!(" - {k}={v}\n"));
        }
    }
    field(&mut o, W, "Hostname", &n.description.hostname);
    field(&mut o, W, "Joined at", &n.created_at);
    field(&mut o, W, "Status", "");
    field(
        &mut o,
        W,
        " State",
        &capitalize(&n.status.state.to_string()),
    );
    if !n.status.message.is_empty() {
        field(&mut o, W, " Message", &n.status.message);
    }
    field(
        &mut o,
        W,
        " Availability",
        &capitalize(&n.spec.availability.to_string()),
    );
    field(&mut o, W, " Address", &n.status.addr);
    if let Some(m) = &n.manager_status {
        field(&mut o, W, "Manager Status", "");
        field(&mut o, W, " Address", &m.addr);
        field(&mut o, W, " Raft Status", &capitalize(&m.reachability));
        field(&mut o, W, " Leader", if m.leader { "Yes" } else { "No" });
    }
    field(&mut o, W, "Platform", "");
    field(&mut o, W, " Operating System", &n.description.platform.os);
    field(
        &mut o,
        W,
        " Architecture",
        &n.description.platform.architecture,
    );
    let r = &n.description.resources;
    if r.nano_cpus > 0 || r.memory_bytes > 0 {
        // Docker's layout: CPUs as a count, memory in binary units.
        field(&mut o, W, "Resources", "");
        field(&mut o, W, " CPUs", &format!("{}", r.nano_cpus as f64 / 1e9));
        field(
            &mut o,
            W,
            " Memory",
            &format!("{:.1}GiB", r.memory_bytes as f64 / f64::from(1u32 << 30)),
        );
    }
    field(&mut o, W, "Executor", &n.description.executor);
    field(&mut o, W, "Dataplane", &n.description.dataplane);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::*;

    fn node(
        id: &str,
        host: &str,
        state: NodeState,
        avail: Availability,
        m: Option<(bool, &str)>,
    ) -> Node {
        Node {
            id: id.into(),
            version: Version { index: 3 },
            created_at: "2024-05-01T12:00:00Z".into(),
            updated_at: "2024-05-01T12:00:00Z".into(),
            spec: NodeSpec {
                name: String::new(),
                labels: Default::default(),
                role: if m.is_some() {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                },
                availability: avail,
            },
            description: NodeDescription {
                hostname: host.into(),
                platform: Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                },
                executor: "native".into(),
                dataplane: "nftables".into(),
                resources: Default::default(),
            },
            status: NodeStatus {
                state,
                message: String::new(),
                addr: "198.18.0.1".into(),
            },
            manager_status: m.map(|(leader, reach)| ManagerStatus {
                leader,
                reachability: reach.into(),
                addr: "198.18.0.1:2377".into(),
            }),
            raft_id: 0,
            ingress_addr: String::new(),
        }
    }

    fn cluster() -> Vec<Node> {
        vec![
            node(
                "w2xxxxxxxxxxxxxxxxxxxxxxx",
                "worker-2",
                NodeState::Down,
                Availability::Drain,
                None,
            ),
            node(
                "m1xxxxxxxxxxxxxxxxxxxxxxx",
                "manager-1",
                NodeState::Ready,
                Availability::Active,
                Some((true, "reachable")),
            ),
            node(
                "m2xxxxxxxxxxxxxxxxxxxxxxx",
                "manager-2",
                NodeState::Ready,
                Availability::Pause,
                Some((false, "unreachable")),
            ),
            node(
                "w1xxxxxxxxxxxxxxxxxxxxxxx",
                "worker-1",
                NodeState::Ready,
                Availability::Active,
                None,
            ),
        ]
    }

    #[test]
    fn renders_node_ls_like_docker() {
        let want = "\
ID                            HOSTNAME    STATUS    AVAILABILITY   MANAGER STATUS
m1xxxxxxxxxxxxxxxxxxxxxxx *   manager-1   Ready     Active         Leader
m2xxxxxxxxxxxxxxxxxxxxxxx     manager-2   Ready     Pause          Unreachable
w1xxxxxxxxxxxxxxxxxxxxxxx     worker-1    Ready     Active
w2xxxxxxxxxxxxxxxxxxxxxxx     worker-2    Down      Drain
";
        assert_eq!(render_nodes(&cluster(), "m1xxxxxxxxxxxxxxxxxxxxxxx"), want);
        assert_eq!(
            render_node_ids(&cluster()),
            "m1xxxxxxxxxxxxxxxxxxxxxxx\nm2xxxxxxxxxxxxxxxxxxxxxxx\nw1xxxxxxxxxxxxxxxxxxxxxxx\nw2xxxxxxxxxxxxxxxxxxxxxxx\n"
        );
    }

    #[test]
    fn pretty_node() {
        let n = &cluster()[1];
        let text = render_pretty(n);
        assert!(text.starts_with(
            "ID:                   m1xxxxxxxxxxxxxxxxxxxxxxx\nHostname:             manager-1\n"
        ));
        assert!(text.contains(" Leader:              Yes\n"));
        assert!(text.contains(" Raft Status:         Reachable\n"));
        assert!(!text.contains("Resources"), "none reported");
        let mut n = n.clone();
        n.description.resources = Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 3 << 30,
        };
        let text = render_pretty(&n);
        assert!(
            text.contains("Resources:\n CPUs:                2\n Memory:              3.0GiB\n"),
            "{text}"
        );
    }

    #[test]
    fn node_update_checks_labels() {
        let args = UpdateArgs {
            availability: Some(AvailabilityArg::Drain),
            role: None,
            label_add: vec!["zone=a".into(), "ssd".into()],
            label_rm: vec!["old".into()],
            node: "n1".into(),
        };
        let u = node_update(&args).unwrap();
        assert_eq!(u.availability, Some(Availability::Drain));
        assert_eq!(u.labels_add.get("zone").map(String::as_str), Some("a"));
        assert_eq!(u.labels_add.get("ssd").map(String::as_str), Some(""));
        assert_eq!(u.labels_rm, vec!["old".to_string()]);
        let bad = UpdateArgs {
            label_add: vec!["=x".into()],
            ..args
        };
        assert_eq!(
            node_update(&bad).unwrap_err().to_string(),
            r#"invalid --label-add "=x": missing label key (use KEY=VALUE)"#
        );
    }
}

//! The task table of `service ps` and `node ps`.

use crate::format::{capitalize, ellipsize, id_column, state_since};
use crate::table::Table;
use shoal_api::control::TaskView;
use shoal_api::objects::{PortConfig, PublishMode, Runtime, TaskSpec, TaskState};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Docker's limit for the ERROR column unless `--no-trunc`.
const MAX_ERR_LEN: usize = 30;

pub struct TaskTable<'a> {
    pub no_trunc: bool,
    /// Unix nanoseconds, for "Running 5 seconds ago".
    pub now: i128,
    /// Host-mode published ports per service id, shown for running tasks.
    pub host_ports: &'a BTreeMap<String, Vec<PortConfig>>,
}

/// The slot a task fills: `service.slot`, or `service.node` for global services.
fn slot_name(task: &TaskView) -> String {
    let service = if task.service_name.is_empty() {
        &task.task.service_id
    } else {
        &task.service_name
    };
    if task.task.slot > 0 {
        format!("{service}.{}", task.task.slot)
    } else {
        format!("{service}.{}", task.task.node_id)
    }
}

/// Tasks by service and slot, the newest of each slot first, as Docker lists them.
pub fn sorted(tasks: &[TaskView]) -> Vec<&TaskView> {
    let mut out: Vec<&TaskView> = tasks.iter().collect();
    out.sort_by_key(|t| {
        let created = shoal_api::parse_rfc3339(&t.task.created_at).unwrap_or(0);
        (
            t.service_name.clone(),
            t.task.service_id.clone(),
            t.task.slot,
            // Replicated tasks of one slot may sit on different nodes; only global tasks
            // belong to a node.
            if t.task.slot == 0 {
                t.task.node_id.clone()
            } else {
                String::new()
            },
            Reverse(created),
            Reverse(t.task.version.index),
            t.task.id.clone(),
        )
    });
    out
}

/// What a task runs: the image (without digest unless `no_trunc`), or the command of a
/// native task.
pub fn task_image(spec: &TaskSpec, no_trunc: bool) -> String {
    let c = &spec.container_spec;
    if spec.runtime == Runtime::Native || c.image.is_empty() {
        let full = c
            .command
            .iter()
            .chain(&c.args)
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ");
        return if no_trunc {
            full
        } else {
            truncate_command(&full)
        };
    }
    if no_trunc {
        c.image.clone()
    } else {
        c.image.split('@').next().unwrap_or_default().to_string()
    }
}

/// A table cell for a command: its first line, at most 40 characters, "…" when cut.
fn truncate_command(full: &str) -> String {
    const MAX: usize = 40;
    let first = full.lines().next().unwrap_or_default();
    let cut: String = first.chars().take(MAX).collect();
    if cut.len() < full.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// A command word as a shell would need it, so `sh -c "echo hi"` reads as three words.
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && !w
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\$`".contains(c))
    {
        return w.to_string();
    }
    format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Docker's `*:8080->80/tcp`.
pub fn port_text(p: &PortConfig) -> String {
    if p.published_port == 0 {
        format!("{}/{}", p.target_port, p.protocol)
    } else {
        format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol)
    }
}

/// Host-mode ports of a service, from its allocated ports (or its spec before allocation).
pub fn host_ports(view: &shoal_api::control::ServiceView) -> Vec<PortConfig> {
    let endpoint = &view.service.endpoint;
    let ports = if endpoint.ports.is_empty() {
        &view.service.spec.endpoint_spec.ports
    } else {
        &endpoint.ports
    };
    ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host)
        .cloned()
        .collect()
}

/// Docker's task table columns, and the template fields behind them.
pub const HEADERS: [(&str, &str); 8] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Image", "IMAGE"),
    ("Node", "NODE"),
    ("DesiredState", "DESIRED STATE"),
    ("CurrentState", "CURRENT STATE"),
    ("Error", "ERROR"),
    ("Ports", "PORTS"),
];

/// The cells of each task in table order, as `HEADERS` names them. Older tasks of a slot
/// are indented (` \_ `) only when `indent`: Docker does it for table formats alone.
pub fn rows(tasks: &[TaskView], opts: &TaskTable<'_>, indent: bool) -> Vec<[String; 8]> {
    let mut out = Vec::new();
    let mut prev_slot = None;
    for t in sorted(tasks) {
        let task = &t.task;
        let slot = slot_name(t);
        let mut name = if indent && prev_slot.as_deref() == Some(slot.as_str()) {
            format!(" \\_ {slot}")
        } else {
            slot.clone()
        };
        prev_slot = Some(slot);
        if opts.no_trunc {
            name = format!("{name}.{}", task.id);
        }
        let node = if t.node_name.is_empty() {
            id_column(&task.node_id, opts.no_trunc).to_string()
        } else {
            t.node_name.clone()
        };
        let err = match task.status.err.as_str() {
            "" => String::new(),
            e if opts.no_trunc => format!("\"{e}\""),
            e => format!("\"{}\"", ellipsize(e, MAX_ERR_LEN)),
        };
        let ports = if task.status.state == TaskState::Running {
            opts.host_ports
                .get(&task.service_id)
                .map(|ports| ports.iter().map(port_text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        } else {
            String::new()
        };
        out.push([
            id_column(&task.id, opts.no_trunc).to_string(),
            name,
            task_image(&task.spec, opts.no_trunc),
            node,
            capitalize(&task.desired_state.to_string()),
            state_since(
                &task.status.state.to_string(),
                &task.status.timestamp,
                opts.now,
            ),
            err,
            ports,
        ]);
    }
    out
}

pub fn render(tasks: &[TaskView], opts: &TaskTable<'_>) -> String {
    let mut table = Table::new(HEADERS.iter().map(|(_, title)| *title));
    for row in rows(tasks, opts, true) {
        table.row(row);
    }
    table.render()
}

/// `-q`: task ids in table order.
pub fn render_ids(tasks: &[TaskView], no_trunc: bool) -> String {
    sorted(tasks)
        .into_iter()
        .map(|t| format!("{}\n", id_column(&t.task.id, no_trunc)))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shoal_api::objects::*;

    pub const NOW: &str = "2024-05-01T12:00:00Z";

    pub fn task_view(
        id: &str,
        service: &str,
        slot: u64,
        node: &str,
        state: TaskState,
        desired: TaskState,
        age_secs: i64,
    ) -> TaskView {
        let now = shoal_api::parse_rfc3339(NOW).unwrap();
        let at = shoal_api::format_unix_nanos(now - i128::from(age_secs) * 1_000_000_000);
        TaskView {
            task: Task {
                id: id.into(),
                version: Version { index: 1 },
                created_at: at.clone(),
                updated_at: at.clone(),
                service_id: format!("{service}-id"),
                slot,
                node_id: format!("{node}-id"),
                spec: TaskSpec {
                    container_spec: ContainerSpec {
                        image: "nginx:1.27@sha256:abcdef".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                spec_version: Version { index: 1 },
                status: TaskStatus {
                    timestamp: at,
                    state,
                    ..Default::default()
                },
                desired_state: desired,
                networks_attachments: vec![],
                restart_count: 0,
            },
            name: format!("{service}.{slot}.{id}"),
            service_name: service.into(),
            node_name: node.into(),
        }
    }

    #[test]
    fn renders_slots_with_history_like_docker() {
        use TaskState::*;
        let mut failed = task_view(
            "t1old0000000000000",
            "web",
            1,
            "node-1",
            Failed,
            Shutdown,
            120,
        );
        failed.task.status.err = "task: non-zero exit (1): the process was killed".into();
        let tasks = vec![
            task_view(
                "t2aaaaaaaaaaaaaaaa",
                "web",
                2,
                "node-2",
                Running,
                Running,
                5,
            ),
            failed,
            task_view(
                "t1new0000000000000",
                "web",
                1,
                "node-1",
                Running,
                Running,
                30,
            ),
            task_view(
                "t10xxxxxxxxxxxxxxx",
                "web",
                10,
                "node-1",
                Pending,
                Running,
                0,
            ),
        ];
        let mut ports = BTreeMap::new();
        ports.insert(
            "web-id".to_string(),
            vec![PortConfig {
                name: String::new(),
                protocol: Protocol::Tcp,
                target_port: 80,
                published_port: 8080,
                publish_mode: PublishMode::Host,
            }],
        );
        let opts = TaskTable {
            no_trunc: false,
            now: shoal_api::parse_rfc3339(NOW).unwrap(),
            host_ports: &ports,
        };
        let want = "\
ID             NAME        IMAGE        NODE      DESIRED STATE   CURRENT STATE                    ERROR                              PORTS
t1new0000000   web.1       nginx:1.27   node-1    Running         Running 30 seconds ago                                              *:8080->80/tcp
t1old0000000    \\_ web.1   nginx:1.27   node-1    Shutdown        Failed 2 minutes ago             \"task: non-zero exit (1): the …\"
t2aaaaaaaaaa   web.2       nginx:1.27   node-2    Running         Running 5 seconds ago                                               *:8080->80/tcp
t10xxxxxxxxx   web.10      nginx:1.27   node-1    Running         Pending less than a second ago
";
        assert_eq!(render(&tasks, &opts), want);
        assert_eq!(
            render_ids(&tasks, false),
            "t1new0000000\nt1old0000000\nt2aaaaaaaaaa\nt10xxxxxxxxx\n"
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("ls"), "ls");
        assert_eq!(shell_word("echo hi"), "\"echo hi\"");
        assert_eq!(shell_word(""), "\"\"");
        assert_eq!(shell_word("say \"x\""), "\"say \\\"x\\\"\"");
    }

    #[test]
    fn no_trunc_shows_full_ids_and_native_commands() {
        use TaskState::*;
        let mut t = task_view(
            "taskid-full-length-x",
            "job",
            0,
            "n1",
            Running,
            Running,
            3600,
        );
        t.task.spec.runtime = Runtime::Native;
        t.task.spec.container_spec = ContainerSpec {
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            ..Default::default()
        };
        let ports = BTreeMap::new();
        let opts = TaskTable {
            no_trunc: true,
            now: shoal_api::parse_rfc3339(NOW).unwrap(),
            host_ports: &ports,
        };
        let want = "\
ID                     NAME                             IMAGE             NODE      DESIRED STATE   CURRENT STATE               ERROR     PORTS
taskid-full-length-x   job.n1-id.taskid-full-length-x   sh -c \"echo hi\"   n1        Running         Running about an hour ago
";
        assert_eq!(render(&[t], &opts), want);
    }
}

#[cfg(test)]
mod command_cell_tests {
    #[test]
    fn long_or_multi_line_commands_are_cut_in_tables() {
        assert_eq!(super::truncate_command("sleep 600"), "sleep 600");
        assert_eq!(
            super::truncate_command("python3 -c \"import os\nprint(1)\""),
            "python3 -c \"import os…"
        );
        let long = "x".repeat(50);
        assert_eq!(
            super::truncate_command(&long),
            format!("{}…", "x".repeat(40))
        );
    }
}

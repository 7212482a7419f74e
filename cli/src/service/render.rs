//! `service ls` and `service inspect --pretty` output.

use crate::duration::format_nanos;
use crate::format::{capitalize, field, short_id};
use crate::table::Table;
use crate::tasks::task_image;
use shoal_api::control::ServiceView;
use shoal_api::objects::{Limits, PortConfig, Protocol, Reservations, ServiceMode, UpdateConfig};

pub fn mode_name(mode: &ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global {} => "global",
    }
}

/// The ports a service publishes: allocated ones once the daemon has filled them in.
fn published_ports(view: &ServiceView) -> Vec<PortConfig> {
    let endpoint = &view.service.endpoint;
    if endpoint.ports.is_empty() {
        view.service
            .spec
            .endpoint_spec
            .ports
            .iter()
            .filter(|p| p.published_port != 0)
            .cloned()
            .collect()
    } else {
        endpoint.ports.clone()
    }
}

/// Docker's PORTS column: `*:30000->80/tcp`, consecutive ports folded into ranges
/// (`*:8080-8081->80-81/tcp`), joined by ", ".
pub fn ports_column(ports: &[PortConfig]) -> String {
    let mut ports: Vec<&PortConfig> = ports.iter().collect();
    ports.sort_by_key(|p| (proto_rank(p.protocol), p.published_port, p.target_port));
    struct Run {
        p: (u16, u16),
        t: (u16, u16),
        proto: Protocol,
    }
    let mut runs: Vec<Run> = Vec::new();
    for p in ports {
        if let Some(r) = runs.last_mut()
            && r.proto == p.protocol
            && r.p.1 != 0
            && p.published_port == r.p.1.wrapping_add(1)
            && p.target_port == r.t.1.wrapping_add(1)
        {
            r.p.1 = p.published_port;
            r.t.1 = p.target_port;
            continue;
        }
        runs.push(Run {
            p: (p.published_port, p.published_port),
            t: (p.target_port, p.target_port),
            proto: p.protocol,
        });
    }
    let range = |(lo, hi): (u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    runs.iter()
        .map(|r| {
            if r.p.0 == 0 {
                format!("{}/{}", range(r.t), r.proto)
            } else {
                format!("*:{}->{}/{}", range(r.p), range(r.t), r.proto)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn proto_rank(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

/// Docker's `service ls` columns, and the template fields behind them.
pub const HEADERS: [(&str, &str); 6] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

/// One service's `service ls` cells, as `HEADERS` names them.
pub fn ls_cells(view: &ServiceView) -> [String; 6] {
    let s = &view.service;
    [
        short_id(&s.id).to_string(),
        s.spec.name.clone(),
        mode_name(&s.spec.mode).to_string(),
        format!(
            "{}/{}",
            view.service_status.running_tasks, view.service_status.desired_tasks
        ),
        task_image(&s.spec.task_template, false),
        ports_column(&published_ports(view)),
    ]
}

/// `service ls`, sorted by name as Docker does.
pub fn render_services(services: &[ServiceView]) -> String {
    let mut table = Table::new(HEADERS.iter().map(|(_, title)| *title));
    for view in sorted(services) {
        table.row(ls_cells(view));
    }
    table.render()
}

pub fn render_service_ids(services: &[ServiceView]) -> String {
    sorted(services)
        .into_iter()
        .map(|v| format!("{}\n", short_id(&v.service.id)))
        .collect()
}

pub fn sorted(services: &[ServiceView]) -> Vec<&ServiceView> {
    let mut out: Vec<&ServiceView> = services.iter().collect();
    out.sort_by(|a, b| {
        (&a.service.spec.name, &a.service.id).cmp(&(&b.service.spec.name, &b.service.id))
    });
    out
}

/// A human summary of one service, after Docker's `service inspect --pretty`.
/// Column of the values in `--pretty` output.
const W: usize = 20;

pub fn render_pretty(view: &ServiceView) -> String {
    let s = &view.service;
    let spec = &s.spec;
    let task = &spec.task_template;
    let c = &task.container_spec;
    let mut o = String::new();
    field(&mut o, W, "ID", &s.id);
    field(&mut o, W, "Name", &spec.name);
    if !spec.labels.is_empty() {
        field(&mut o, W, "Labels", "");
        for (k, v) in &spec.labels {
            o.push_str(&format!(" - {k}={v}\n"));
        }
    }
    field(
        &mut o,
        W,
        "Service Mode",
        &capitalize(mode_name(&spec.mode)),
    );
    if let ServiceMode::Replicated { replicas } = spec.mode {
        field(&mut o, W, " Replicas", &replicas.to_string());
    }
    field(
        &mut o,
        W,
        " Running",
        &format!(
            "{}/{}",
            view.service_status.running_tasks, view.service_status.desired_tasks
        ),
    );
    if let Some(u) = &s.update_status {
        field(&mut o, W, "UpdateStatus", "");
        field(&mut o, W, " State", &u.state);
        field(&mut o, W, " Started", &u.started_at);
        if !u.completed_at.is_empty() {
            field(&mut o, W, " Completed", &u.completed_at);
        }
        if !u.message.is_empty() {
            field(&mut o, W, " Message", &u.message);
        }
    }
    let pl = &task.placement;
    if !pl.constraints.is_empty() || !pl.preferences.is_empty() || pl.max_replicas > 0 {
        field(&mut o, W, "Placement", "");
        if !pl.constraints.is_empty() {
            field(
                &mut o,
                W,
                " Constraints",
                &format!("[{}]", pl.constraints.join(" ")),
            );
        }
        if !pl.preferences.is_empty() {
            let prefs: Vec<String> = pl
                .preferences
                .iter()
                .map(|p| format!("Spread={}", p.spread.spread_descriptor))
                .collect();
            field(&mut o, W, " Preferences", &prefs.join(", "));
        }
        if pl.max_replicas > 0 {
            field(
                &mut o,
                W,
                " Max Replicas Per Node",
                &pl.max_replicas.to_string(),
            );
        }
    }
    rollout(&mut o, "UpdateConfig", "Update order", &spec.update_config);
    if let Some(rb) = &spec.rollback_config {
        rollout(&mut o, "RollbackConfig", "Rollback order", rb);
    }
    field(&mut o, W, "Runtime", &task.runtime.to_string());
    field(&mut o, W, "ContainerSpec", "");
    if !c.image.is_empty() {
        field(&mut o, W, " Image", &c.image);
    }
    if !c.command.is_empty() {
        field(&mut o, W, " Command", &c.command.join(" "));
    }
    if !c.args.is_empty() {
        field(&mut o, W, " Args", &c.args.join(" "));
    }
    if !c.env.is_empty() {
        field(&mut o, W, " Env", &c.env.join(" "));
    }
    for (name, value) in [
        (" Hostname", c.hostname.as_str()),
        (" Dir", c.dir.as_str()),
        (" User", c.user.as_str()),
        (" StopSignal", c.stop_signal.as_str()),
    ] {
        if !value.is_empty() {
            field(&mut o, W, name, value);
        }
    }
    if let Some(init) = c.init {
        field(&mut o, W, " Init", &init.to_string());
    }
    if c.read_only {
        field(&mut o, W, " Read Only", "true");
    }
    if c.tty {
        field(&mut o, W, " TTY", "true");
    }
    if !c.capability_add.is_empty() || !c.capability_drop.is_empty() {
        field(&mut o, W, " Capabilities", "");
        if !c.capability_add.is_empty() {
            field(&mut o, W, "  Add", &c.capability_add.join(", "));
        }
        if !c.capability_drop.is_empty() {
            field(&mut o, W, "  Drop", &c.capability_drop.join(", "));
        }
    }
    field(
        &mut o,
        W,
        " StopGracePeriod",
        &format_nanos(c.stop_grace_period),
    );
    if !c.labels.is_empty() {
        field(&mut o, W, " Labels", "");
        for (k, v) in &c.labels {
            o.push_str(&format!("  - {k}={v}\n"));
        }
    }
    if let Some(d) = &c.dns_config {
        field(&mut o, W, " DNS", &d.nameservers.join(" "));
        if !d.search.is_empty() {
            field(&mut o, W, " DNS Search", &d.search.join(" "));
        }
        if !d.options.is_empty() {
            field(&mut o, W, " DNS Options", &d.options.join(" "));
        }
    }
    if !c.hosts.is_empty() {
        field(&mut o, W, " Hosts", &c.hosts.join(", "));
    }
    if !c.mounts.is_empty() {
        field(&mut o, W, "Mounts", "");
        for m in &c.mounts {
            field(&mut o, W, " Target", &m.target);
            field(&mut o, W, "  Source", &m.source);
            field(&mut o, W, "  ReadOnly", &m.read_only.to_string());
            field(&mut o, W, "  Type", &m.kind);
        }
    }
    // Docker lists configs before secrets, each by its target as written.
    let target = |f: &Option<shoal_api::secrets::FileTarget>| {
        f.as_ref().map(|f| f.name.clone()).unwrap_or_default()
    };
    if !c.configs.is_empty() {
        field(&mut o, W, "Configs", "");
        for r in &c.configs {
            field(&mut o, W, " Target", &target(&r.file));
            field(&mut o, W, "  Source", &r.config_name);
        }
    }
    if !c.secrets.is_empty() {
        field(&mut o, W, "Secrets", "");
        for r in &c.secrets {
            field(&mut o, W, " Target", &target(&r.file));
            field(&mut o, W, "  Source", &r.secret_name);
        }
    }
    let r = &task.resources;
    if r.reservations != Reservations::default() || r.limits != Limits::default() {
        field(&mut o, W, "Resources", "");
        let cpu = |n: i64| format!("{}", n as f64 / 1e9);
        let mem = |b: i64| format!("{}MiB", b as f64 / (1024.0 * 1024.0));
        if r.reservations != Reservations::default() {
            field(&mut o, W, " Reservations", "");
            if r.reservations.nano_cpus > 0 {
                field(&mut o, W, "  CPU", &cpu(r.reservations.nano_cpus));
            }
            if r.reservations.memory_bytes > 0 {
                field(&mut o, W, "  Memory", &mem(r.reservations.memory_bytes));
            }
        }
        if r.limits != Limits::default() {
            field(&mut o, W, " Limits", "");
            if r.limits.nano_cpus > 0 {
                field(&mut o, W, "  CPU", &cpu(r.limits.nano_cpus));
            }
            if r.limits.memory_bytes > 0 {
                field(&mut o, W, "  Memory", &mem(r.limits.memory_bytes));
            }
            if r.limits.pids > 0 {
                field(&mut o, W, "  PIDs", &r.limits.pids.to_string());
            }
        }
    }
    if !task.networks.is_empty() {
        let nets: Vec<&str> = task.networks.iter().map(|n| n.target.as_str()).collect();
        field(&mut o, W, "Networks", &nets.join(" "));
    }
    field(
        &mut o,
        W,
        "Endpoint Mode",
        &spec.endpoint_spec.mode.to_string(),
    );
    if let Some(t) = spec.endpoint_spec.session_affinity.timeout_s() {
        field(
            &mut o,
            W,
            "Session Affinity",
            &format!(
                "client-ip (timeout {})",
                format_nanos(u64::from(t) * 1_000_000_000)
            ),
        );
    }
    let ports = published_ports(view);
    if !ports.is_empty() {
        field(&mut o, W, "Ports", "");
        for p in &ports {
            field(&mut o, W, " PublishedPort", &p.published_port.to_string());
            field(&mut o, W, "  Protocol", &p.protocol.to_string());
            field(&mut o, W, "  TargetPort", &p.target_port.to_string());
            field(&mut o, W, "  PublishMode", &p.publish_mode.to_string());
        }
    }
    if let Some(l) = &task.log_driver {
        field(&mut o, W, "Log Driver", "");
        field(&mut o, W, " Name", &l.name);
        if !l.options.is_empty() {
            field(&mut o, W, " LogOpts", "");
            for (k, v) in &l.options {
                field(&mut o, W, &format!("  {k}"), v);
            }
        }
    }
    for vip in &s.endpoint.virtual_ips {
        field(
            &mut o,
            W,
            "VirtualIP",
            &format!("{} on {}", vip.addr, vip.network_id),
        );
    }
    o
}

/// Docker's UpdateConfig / RollbackConfig block.
fn rollout(o: &mut String, title: &str, order_title: &str, u: &UpdateConfig) {
    field(o, W, title, "");
    field(o, W, " Parallelism", &u.parallelism.to_string());
    if u.delay > 0 {
        field(o, W, " Delay", &format_nanos(u.delay));
    }
    field(o, W, " On failure", &u.failure_action.to_string());
    let monitor = if u.monitor == 0 {
        UpdateConfig::DEFAULT_MONITOR
    } else {
        u.monitor
    };
    field(o, W, " Monitoring Period", &format_nanos(monitor));
    field(
        o,
        W,
        " Max failure ratio",
        &u.max_failure_ratio.0.to_string(),
    );
    let order = serde_json::to_value(u.order).unwrap_or_default();
    field(
        o,
        W,
        &format!(" {order_title}"),
        order.as_str().unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::control::ServiceStatus;
    use shoal_api::objects::*;

    fn port(published: u16, target: u16, protocol: Protocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            name: String::new(),
            protocol,
            target_port: target,
            published_port: published,
            publish_mode: mode,
        }
    }

    fn tcp(published: u16, target: u16) -> PortConfig {
        port(published, target, Protocol::Tcp, PublishMode::Ingress)
    }

    fn service(id: &str, name: &str, mode: ServiceMode, running: u64, desired: u64) -> ServiceView {
        let spec = ServiceSpec {
            name: name.into(),
            labels: Default::default(),
            task_template: TaskSpec {
                container_spec: ContainerSpec {
                    image: "nginx:1.27@sha256:0123".into(),
                    stop_grace_period: 10_000_000_000,
                    ..Default::default()
                },
                ..Default::default()
            },
            mode,
            update_config: UpdateConfig::default(),
            rollback_config: None,
            endpoint_spec: EndpointSpec::default(),
        };
        ServiceView {
            service: Service {
                id: id.into(),
                version: Version { index: 1 },
                created_at: String::new(),
                updated_at: String::new(),
                spec,
                previous_spec: None,
                endpoint: Endpoint::default(),
                update_status: None,
                spec_version: Version { index: 1 },
            },
            service_status: ServiceStatus {
                running_tasks: running,
                desired_tasks: desired,
            },
        }
    }

    #[test]
    fn ports_column_like_docker() {
        use Protocol::*;
        use PublishMode::*;
        assert_eq!(ports_column(&[]), "");
        assert_eq!(ports_column(&[tcp(30000, 80)]), "*:30000->80/tcp");
        assert_eq!(
            ports_column(&[
                port(53, 53, Udp, Ingress),
                tcp(8081, 81),
                tcp(8080, 80),
                port(9000, 9000, Tcp, Host),
            ]),
            "*:8080-8081->80-81/tcp, *:9000->9000/tcp, *:53->53/udp"
        );
        assert_eq!(
            ports_column(&[tcp(8080, 80), tcp(8082, 82)]),
            "*:8080->80/tcp, *:8082->82/tcp"
        );
    }

    #[test]
    fn renders_service_ls() {
        let mut web = service(
            "abcdefghijkl0123456789xyz",
            "web",
            ServiceMode::Replicated { replicas: 3 },
            2,
            3,
        );
        web.service.endpoint.ports = vec![tcp(30000, 80)];
        web.service.spec.endpoint_spec.ports = vec![tcp(0, 80)];
        let mut job = service(
            "0123456789abcdefghijklmno",
            "a-native-job",
            ServiceMode::Global {},
            4,
            4,
        );
        job.service.spec.task_template.runtime = Runtime::Native;
        job.service.spec.task_template.container_spec = ContainerSpec {
            command: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        };
        // Before allocation only explicit published ports are known.
        job.service.spec.endpoint_spec.ports =
            vec![tcp(0, 81), port(8080, 80, Protocol::Tcp, PublishMode::Host)];
        let want = "\
ID             NAME           MODE         REPLICAS   IMAGE            PORTS
0123456789ab   a-native-job   global       4/4        sleep infinity   *:8080->80/tcp
abcdefghijkl   web            replicated   2/3        nginx:1.27       *:30000->80/tcp
";
        let services = vec![web, job];
        assert_eq!(render_services(&services), want);
        assert_eq!(
            render_service_ids(&services),
            "0123456789ab\nabcdefghijkl\n"
        );
    }

    #[test]
    fn pretty_summary() {
        let mut web = service(
            "svcid",
            "web",
            ServiceMode::Replicated { replicas: 3 },
            3,
            3,
        );
        web.service.endpoint.ports = vec![tcp(30000, 80)];
        let text = render_pretty(&web);
        assert!(text.starts_with("ID:                 svcid\nName:               web\nService Mode:       Replicated\n Replicas:          3\n"), "{text}");
        assert!(
            text.contains("\nPorts:\n PublishedPort:     30000\n"),
            "{text}"
        );
        assert!(text.contains(" StopGracePeriod:   10s\n"), "{text}");
    }

    #[test]
    fn pretty_shows_rollouts_resources_mounts_and_logging() {
        let mut web = service(
            "svcid",
            "web",
            ServiceMode::Replicated { replicas: 1 },
            1,
            1,
        );
        let spec = &mut web.service.spec;
        spec.update_config.failure_action = FailureAction::Rollback;
        spec.rollback_config = Some(UpdateConfig {
            parallelism: 2,
            ..Default::default()
        });
        let t = &mut spec.task_template;
        t.resources.reservations.memory_bytes = 128 << 20;
        t.resources.limits.pids = 50;
        t.placement.max_replicas = 1;
        t.container_spec.user = "app".into();
        t.container_spec.mounts = vec![Mount {
            kind: "volume".into(),
            source: "shop_data".into(),
            target: "/data".into(),
            ..Default::default()
        }];
        t.container_spec.secrets =
            vec![crate::service::files::parse_secret("--secret", "db_password").unwrap()];
        t.container_spec.configs = vec![
            crate::service::files::parse_config("--config", "source=site,target=/etc/nginx.conf")
                .unwrap(),
        ];
        t.log_driver = Some(Driver {
            name: "json-file".into(),
            options: [("max-size".to_string(), "10m".to_string())].into(),
        });
        let text = render_pretty(&web);
        for want in [
            "UpdateConfig:\n Parallelism:       1\n On failure:        rollback\n Monitoring Period: 5s\n",
            "RollbackConfig:\n Parallelism:       2\n On failure:        pause\n",
            " Rollback order:    stop-first\n",
            " Max Replicas Per Node: 1\n",
            " User:              app\n",
            "Mounts:\n Target:            /data\n  Source:           shop_data\n",
            "Resources:\n Reservations:\n  Memory:           128MiB\n Limits:\n  PIDs:             50\n",
            "Log Driver:\n Name:              json-file\n LogOpts:\n  max-size:         10m\n",
            "Configs:\n Target:            /etc/nginx.conf\n  Source:           site\nSecrets:\n Target:            db_password\n  Source:           db_password\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}

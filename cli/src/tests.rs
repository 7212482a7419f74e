//! Command-line parsing: the clap definition is consistent and Docker's spellings parse.

use super::*;
use crate::service::{ServiceCommand, create_options, spec, update_ops};
use clap::CommandFactory;

fn parse(args: &[&str]) -> Cli {
    let mut argv = vec!["shoal"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(docker_argv(&argv)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_err(args: &[&str]) -> String {
    let mut argv = vec!["shoal"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(&argv) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => match parse_outcome(&e, &argv) {
            ParseOutcome::Fail(line) => line,
            ParseOutcome::Print(text) => panic!("{args:?} printed {text}"),
        },
    }
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn default_host_is_the_default_socket() {
    assert_eq!(
        DEFAULT_HOST,
        format!("unix://{}", shoal_api::client::DEFAULT_SOCKET)
    );
}

#[test]
fn host_flag_anywhere() {
    assert_eq!(parse(&["node", "ls"]).host, DEFAULT_HOST);
    assert_eq!(
        parse(&["-H", "unix:///tmp/a.sock", "node", "ls"]).host,
        "unix:///tmp/a.sock"
    );
    assert_eq!(
        parse(&["service", "ls", "--host", "unix:///tmp/b.sock"]).host,
        "unix:///tmp/b.sock"
    );
}

fn create_args(args: &[&str]) -> service::CreateArgs {
    match parse(args).command {
        Command::Service(ServiceCommand::Create(c)) => *c,
        other => panic!("not service create: {other:?}"),
    }
}

#[test]
fn native_create_takes_the_command_with_its_flags() {
    let c = create_args(&[
        "service",
        "create",
        "--runtime",
        "native",
        "--name",
        "x",
        "sh",
        "-c",
        "echo hi",
    ]);
    let plan = spec::create_plan(&create_options(&c).unwrap(), &|_| None).unwrap();
    let cs = &plan.spec.task_template.container_spec;
    assert_eq!(cs.command, vec!["sh", "-c", "echo hi"]);
    assert!(cs.image.is_empty());
    assert!(cs.args.is_empty());
    assert_eq!(plan.spec.name, "x");
    assert_eq!(
        plan.spec.task_template.runtime,
        shoal_api::objects::Runtime::Native
    );
}

#[test]
fn docker_create_takes_image_then_args() {
    let c = create_args(&[
        "service",
        "create",
        "-p",
        "8080:80",
        "--publish",
        "53/udp",
        "-e",
        "A=1",
        "--replicas",
        "3",
        "-d",
        "nginx:1.27",
        "nginx",
        "-g",
        "daemon off;",
        "--name",
        "not-a-flag",
    ]);
    assert!(c.common.detach);
    assert_eq!(c.replicas, Some(3));
    let plan = spec::create_plan(&create_options(&c).unwrap(), &|_| None).unwrap();
    let cs = &plan.spec.task_template.container_spec;
    assert_eq!(cs.image, "nginx:1.27");
    assert!(cs.command.is_empty());
    assert_eq!(
        cs.args,
        vec!["nginx", "-g", "daemon off;", "--name", "not-a-flag"]
    );
    assert_eq!(plan.spec.endpoint_spec.ports.len(), 2);
    assert_eq!(plan.spec.name, "");
}

#[test]
fn create_durations_parse() {
    let c = create_args(&[
        "service",
        "create",
        "--stop-grace-period",
        "1m30s",
        "--update-delay",
        "500ms",
        "--update-order",
        "start-first",
        "--restart-condition",
        "on-failure",
        "--endpoint-mode",
        "dnsrr",
        "--mode",
        "global",
        "busybox",
    ]);
    assert_eq!(c.common.stop_grace_period, Some(90_000_000_000));
    assert_eq!(c.common.update_delay, Some(500_000_000));
    assert_eq!(c.mode, service::ModeArg::Global);
}

#[test]
fn update_accepts_port_add_as_publish_add() {
    let cli = parse(&[
        "service",
        "update",
        "--port-add",
        "8080:80",
        "--publish-add",
        "9090:90",
        "--publish-rm",
        "7070",
        "--args",
        "sleep 100",
        "web",
    ]);
    let Command::Service(ServiceCommand::Update(u)) = cli.command else {
        panic!("not service update");
    };
    assert_eq!(u.publish_add, vec!["8080:80", "9090:90"]);
    assert_eq!(u.service, "web");
    let ops = update_ops(&u).unwrap();
    assert_eq!(ops.publish_add.len(), 2);
    assert_eq!(ops.publish_add[0].published_port, 8080);
    assert_eq!(ops.args, Some(vec!["sleep".to_string(), "100".to_string()]));
}

#[test]
fn update_rejects_bad_ports_before_sending() {
    let cli = parse(&["service", "update", "--publish-add", "70000:80", "web"]);
    let Command::Service(ServiceCommand::Update(u)) = cli.command else {
        panic!("not service update");
    };
    assert_eq!(
        update_ops(&u).unwrap_err().to_string(),
        r#"invalid --publish-add "70000:80": published port 70000 is out of range 1-65535"#
    );
}

#[test]
fn other_commands_parse() {
    parse(&[
        "swarm",
        "init",
        "--advertise-addr",
        "198.18.0.1",
        "--default-addr-pool",
        "198.19.0.0/16",
    ]);
    parse(&["swarm", "init", "--dynamic-port-range", "30000-30010"]);
    parse(&[
        "swarm",
        "join",
        "--token",
        "SWMTKN-1-a-b",
        "198.18.0.1:2377",
    ]);
    parse(&["swarm", "join-token", "-q", "--rotate", "manager"]);
    parse(&["swarm", "leave", "--force"]);
    parse(&[
        "swarm",
        "update",
        "--dispatcher-heartbeat",
        "2s",
        "--task-history-limit",
        "3",
    ]);
    parse(&["node", "ls", "-q"]);
    parse(&["node", "inspect", "--pretty", "self"]);
    parse(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "a=b",
        "n1",
    ]);
    parse(&["node", "ps"]);
    parse(&["node", "rm", "-f", "n1", "n2"]);
    parse(&["service", "list"]);
    parse(&["service", "ps", "--no-trunc", "-q", "web"]);
    parse(&["service", "scale", "web=3", "api=0"]);
    parse(&["service", "remove", "web"]);
    parse(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "198.19.1.0/24",
        "--attachable",
        "net",
    ]);
    parse(&["network", "ls", "-q"]);
    parse(&["network", "rm", "a", "b"]);
    parse(&["info"]);
}

#[test]
fn parse_errors_are_one_line() {
    assert_eq!(
        parse_err(&["service", "create", "--update-delay", "10", "nginx"]),
        "invalid value '10' for '--update-delay <DURATION>': missing unit in \"10\" (use e.g. 10s, 1m30s, 500ms or 2h); see 'shoal service create --help'"
    );
    assert_eq!(
        parse_err(&["node", "update", "--availability", "gone", "n1"]),
        "invalid value 'gone' for '--availability <AVAILABILITY>' [possible values: active, pause, drain]; see 'shoal node update --help'"
    );
    let line = parse_err(&["service", "create"]);
    assert!(line.contains("<IMAGE_OR_COMMAND>"), "{line}");
    assert!(!line.contains('\n'));
    let line = parse_err(&["swarm", "join", "198.18.0.1:2377"]);
    assert!(line.contains("--token"), "{line}");
    assert!(line.ends_with("; see 'shoal swarm join --help'"), "{line}");
    assert_eq!(
        parse_err(&["-H", "unix:///x", "nodes"]),
        "unrecognized subcommand 'nodes' (tip: a similar subcommand exists: 'node'); see 'shoal --help'"
    );
}

#[test]
fn help_is_printed_not_failed() {
    for args in [
        vec!["shoal", "--help"],
        vec!["shoal"],
        vec!["shoal", "service"],
    ] {
        let err = Cli::try_parse_from(&args).unwrap_err();
        assert!(
            matches!(parse_outcome(&err, &args), ParseOutcome::Print(_)),
            "{args:?}"
        );
    }
}

#[test]
fn error_lines_join_causes() {
    let err = anyhow::anyhow!("inner\nreason").context("outer");
    assert_eq!(error_line(&err), "outer: inner reason");
    // A cause already named by its error is not repeated.
    let err =
        anyhow::Error::from(crate::publish::parse_publish("publish", "70000:80").unwrap_err());
    assert_eq!(
        error_line(&err),
        r#"invalid --publish "70000:80": published port 70000 is out of range 1-65535"#
    );
}

#[tokio::test]
async fn completion_scripts_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let cli = Cli::try_parse_from(["shoal", "completion", shell]).unwrap();
        let mut out = Vec::new();
        run(cli, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        for word in [
            "swarm",
            "service",
            "stack",
            "network",
            "doctor",
            "publish-add",
        ] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn container_and_rollout_flags_fill_dockers_fields() {
    use shoal_api::objects::*;
    let c = create_args(&[
        "service",
        "create",
        "--name",
        "api",
        "--hostname",
        "{{.Service.Name}}-{{.Task.Slot}}",
        "-u",
        "1000:1000",
        "-w",
        "/srv",
        "--entrypoint",
        "/bin/sh -c",
        "--init",
        "--read-only",
        "--stop-signal",
        "SIGQUIT",
        "--container-label",
        "tier=web",
        "--dns",
        "198.18.0.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--host",
        "db.local:198.18.0.5",
        "--host",
        "unix:///tmp/other.sock",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "ALL",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--ulimit",
        "nofile=1024:2048",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=10m",
        "--limit-pids",
        "100",
        "--reserve-cpu",
        "0.25",
        "--reserve-memory",
        "32M",
        "--limit-memory",
        "64M",
        "--restart-window",
        "2m",
        "--replicas-max-per-node",
        "2",
        "--placement-pref",
        "spread=node.labels.zone",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "10s",
        "--update-max-failure-ratio",
        "0.25",
        "--rollback-parallelism",
        "2",
        "--rollback-order",
        "start-first",
        "--mount",
        "source=data,target=/data",
        "--health-cmd",
        "true",
        "--health-start-interval",
        "1s",
        "img",
    ]);
    let plan = spec::create_plan(&create_options(&c).unwrap(), &|_| None).unwrap();
    let s = &plan.spec;
    let daemon = parse(&[
        "service",
        "create",
        "--host",
        "unix:///tmp/other.sock",
        "img",
    ]);
    assert_eq!(
        daemon.host, "unix:///tmp/other.sock",
        "a daemon address stays global"
    );
    let cs = &s.task_template.container_spec;
    assert_eq!(cs.hostname, "{{.Service.Name}}-{{.Task.Slot}}");
    assert_eq!((cs.user.as_str(), cs.dir.as_str()), ("1000:1000", "/srv"));
    assert_eq!(cs.command, ["/bin/sh", "-c"]);
    assert_eq!((cs.init, cs.read_only), (Some(true), true));
    assert_eq!(cs.stop_signal, "SIGQUIT");
    assert_eq!(cs.labels["tier"], "web");
    let dns = cs.dns_config.as_ref().unwrap();
    assert_eq!(dns.nameservers, ["198.18.0.53"]);
    assert_eq!(dns.search, ["corp.example"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(cs.hosts, ["198.18.0.5 db.local"]);
    assert_eq!(cs.capability_add, ["CAP_NET_ADMIN"]);
    assert_eq!(cs.capability_drop, ["ALL"]);
    assert_eq!(cs.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(
        cs.ulimits,
        [Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048
        }]
    );
    assert_eq!(cs.mounts[0].kind, "volume");
    assert_eq!(
        cs.healthcheck.as_ref().unwrap().start_interval,
        1_000_000_000
    );
    let t = &s.task_template;
    assert_eq!(t.log_driver.as_ref().unwrap().options["max-size"], "10m");
    assert_eq!(t.resources.limits.pids, 100);
    assert_eq!(t.resources.reservations.nano_cpus, 250_000_000);
    assert_eq!(t.resources.reservations.memory_bytes, 32 << 20);
    assert_eq!(t.restart_policy.window, 120_000_000_000);
    assert_eq!(t.placement.max_replicas, 2);
    assert_eq!(
        t.placement.preferences[0].spread.spread_descriptor,
        "node.labels.zone"
    );
    assert_eq!(s.update_config.failure_action, FailureAction::Rollback);
    assert_eq!(s.update_config.monitor, 10_000_000_000);
    assert_eq!(s.update_config.max_failure_ratio, Ratio(0.25));
    let rb = s.rollback_config.as_ref().unwrap();
    assert_eq!((rb.parallelism, rb.order), (2, UpdateOrder::StartFirst));

    // Update: -add/-rm lists and the same scalar flags.
    let cli = parse(&[
        "service",
        "update",
        "--container-label-rm",
        "tier",
        "--container-label-add",
        "team=a",
        "--dns-rm",
        "198.18.0.53",
        "--host-rm",
        "db.local",
        "--host-add",
        "cache:198.18.0.6",
        "--cap-add",
        "ALL",
        "--sysctl-rm",
        "net.core.somaxconn",
        "--ulimit-add",
        "nofile=10",
        "--mount-rm",
        "/data",
        "--mount-add",
        "type=tmpfs,target=/tmp",
        "--placement-pref-rm",
        "spread=node.labels.zone",
        "--read-only=false",
        "--health-retries",
        "5",
        "--limit-cpu",
        "1",
        "api",
    ]);
    let Command::Service(ServiceCommand::Update(u)) = cli.command else {
        panic!("not service update");
    };
    let ops = update_ops(&u).unwrap();
    let mut spec = plan.spec.clone();
    ops.edits.apply(&mut spec).unwrap();
    let cs = &spec.task_template.container_spec;
    assert_eq!(cs.labels.keys().collect::<Vec<_>>(), ["team"]);
    assert_eq!(
        cs.dns_config.as_ref().unwrap().nameservers,
        Vec::<String>::new()
    );
    assert_eq!(cs.hosts, ["198.18.0.6 cache"]);
    assert_eq!(cs.capability_add, ["CAP_NET_ADMIN", "ALL"]);
    assert!(
        cs.capability_drop.is_empty(),
        "adding ALL takes it off the drop list"
    );
    assert!(cs.sysctls.is_empty());
    assert_eq!((cs.ulimits[0].soft, cs.ulimits[0].hard), (10, 10));
    assert_eq!(cs.mounts.len(), 1);
    assert_eq!(cs.mounts[0].kind, "tmpfs");
    assert!(!cs.read_only);
    let hc = cs.healthcheck.as_ref().unwrap();
    assert_eq!((hc.test[1].as_str(), hc.retries), ("true", 5));
    assert!(spec.task_template.placement.preferences.is_empty());
    assert_eq!(spec.task_template.resources.limits.nano_cpus, 1_000_000_000);
    // A reservation above its limit is refused.
    let cli = parse(&["service", "update", "--reserve-memory", "128M", "api"]);
    let Command::Service(ServiceCommand::Update(u)) = cli.command else {
        panic!("not service update");
    };
    let err = update_ops(&u).unwrap().edits.apply(&mut spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the memory reservation is above its limit; lower --reserve-memory or raise --limit-memory"
    );
}

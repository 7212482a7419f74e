use super::*;
use crate::fixtures;
use shoal_api::objects::{NodeRole, ServiceMode, TaskState};

fn flags(filter: &[&str], format: Option<&str>) -> ListFlags {
    ListFlags {
        filter: filter.iter().map(|s| s.to_string()).collect(),
        format: format.map(str::to_string),
    }
}

fn services() -> Vec<ServiceView> {
    let mut web = fixtures::service(
        "0zmvwuiu3vue000000000",
        "web",
        ServiceMode::Replicated { replicas: 10 },
        &[("com.docker.stack.namespace", "shop")],
    );
    web.service_status.running_tasks = 10;
    web.service_status.desired_tasks = 10;
    let mut top = fixtures::service("fm6uf97exkul000000000", "top", ServiceMode::Global {}, &[]);
    top.service_status.running_tasks = 5;
    top.service_status.desired_tasks = 5;
    vec![web, top]
}

fn service_ls(quiet: bool, filter: &[&str], format: Option<&str>) -> String {
    ServiceLs::new(quiet, &flags(filter, format))
        .unwrap()
        .render(&services())
        .unwrap()
}

#[test]
fn service_ls_formats_from_docker_docs() {
    // docs/reference/commandline/service_ls.md
    assert_eq!(
        service_ls(false, &[], Some("{{.ID}}: {{.Mode}} {{.Replicas}}")),
        "fm6uf97exkul: global 5/5\n0zmvwuiu3vue: replicated 10/10\n"
    );
    assert_eq!(
        service_ls(false, &["name=web"], Some("json")),
        "{\"ID\":\"0zmvwuiu3vue\",\"Image\":\"nginx:alpine\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"10/10\"}\n"
    );
    assert_eq!(
        service_ls(false, &[], Some("table {{.Name}}\t{{.Image}}")),
        "NAME      IMAGE\ntop       nginx:alpine\nweb       nginx:alpine\n"
    );
    // A bare `table` is the default table.
    assert_eq!(
        service_ls(false, &[], Some("table")),
        service_ls(false, &[], None)
    );
}

#[test]
fn quiet_combines_with_filters_and_yields_to_a_template() {
    // Sorted by name, as the table is.
    assert_eq!(service_ls(true, &[], None), "fm6uf97exkul\n0zmvwuiu3vue\n");
    assert_eq!(service_ls(true, &["mode=global"], None), "fm6uf97exkul\n");
    assert_eq!(
        service_ls(true, &["mode=global"], Some("table")),
        "fm6uf97exkul\n"
    );
    // As in Docker, a custom format wins over -q.
    assert_eq!(
        service_ls(true, &["mode=global"], Some("{{.Name}}")),
        "top\n"
    );
    let table = service_ls(false, &["label=com.docker.stack.namespace=shop"], None);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains(" web ") && !table.contains(" top "),
        "{table}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_is_listed() {
    let err = |filter: &[&str], format: Option<&str>| {
        ServiceLs::new(false, &flags(filter, format))
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(err(&["foo=bar"], None), "invalid filter 'foo'");
    assert!(err(&[], Some("{{.ID")).starts_with("template parsing error: "));
    let exec = ServiceLs::new(false, &flags(&[], Some("{{.Nope}}")))
        .unwrap()
        .render(&services())
        .unwrap_err();
    assert_eq!(
        exec.to_string(),
        "template parsing error: can't evaluate field Nope"
    );
}

#[test]
fn node_ls_rows() {
    let nodes = vec![
        fixtures::node(
            "e216jshn25ckzbvmwlnh5jr3g",
            "swarm-manager1",
            NodeRole::Manager,
            &[],
        ),
        fixtures::node(
            "35o6tiywb700jesrt3dmllaza",
            "swarm-worker1",
            NodeRole::Worker,
            &[],
        ),
    ];
    let ls = |filter: &[&str], format: &str| {
        NodeLs::new(false, &flags(filter, Some(format)))
            .unwrap()
            .render(&nodes, "e216jshn25ckzbvmwlnh5jr3g")
            .unwrap()
    };
    // docs/reference/commandline/node_ls.md
    assert_eq!(
        ls(&[], "{{.ID}}: {{.Hostname}} {{.TLSStatus}}"),
        "e216jshn25ckzbvmwlnh5jr3g: swarm-manager1 Ready\n35o6tiywb700jesrt3dmllaza: swarm-worker1 Ready\n"
    );
    assert_eq!(
        ls(&["role=manager"], "json"),
        "{\"Availability\":\"Active\",\"EngineVersion\":\"\",\"Hostname\":\"swarm-manager1\",\"ID\":\"e216jshn25ckzbvmwlnh5jr3g\",\"ManagerStatus\":\"Leader\",\"Self\":true,\"Status\":\"Ready\",\"TLSStatus\":\"Ready\"}\n"
    );
    // Docker's own default node template, hidden Self column and all.
    assert_eq!(
        ls(
            &[],
            "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"
        ),
        "\
ID                            HOSTNAME         STATUS    AVAILABILITY   MANAGER STATUS
e216jshn25ckzbvmwlnh5jr3g *   swarm-manager1   Ready     Active         Leader
35o6tiywb700jesrt3dmllaza     swarm-worker1    Ready     Active
"
    );
    assert!(!NodeLs::new(true, &flags(&[], None)).unwrap().needs_self());
}

#[test]
fn task_ps_rows() {
    use TaskState::*;
    let tasks = vec![
        fixtures::task("t1new0000000000000", "top", 1, "node-1", Running, Running),
        fixtures::task("t1old0000000000000", "top", 1, "node-1", Shutdown, Shutdown),
        fixtures::task("t2aaaaaaaaaaaaaaaa", "top", 2, "node-2", Running, Running),
    ];
    let now = shoal_api::parse_rfc3339(crate::tasks::tests::NOW).unwrap();
    let ps = |quiet: bool, filter: &[&str], format: Option<&str>| {
        TaskPs::new(quiet, false, &flags(filter, format))
            .unwrap()
            .render_with(&tasks, &[], "node-2-id", now)
            .unwrap()
    };
    // docs/reference/commandline/service_ps.md: names without the history indent.
    assert_eq!(
        ps(false, &[], Some("{{.Name}}: {{.Image}}")),
        "top.1: nginx:1.27\ntop.1: nginx:1.27\ntop.2: nginx:1.27\n"
    );
    // The indent is for tables.
    assert_eq!(
        ps(false, &[], Some("table {{.Name}}\t{{.DesiredState}}")),
        "NAME        DESIRED STATE\ntop.1       Running\n \\_ top.1   Shutdown\ntop.2       Running\n"
    );
    assert_eq!(
        ps(
            false,
            &["node=self"],
            Some("{{.ID}} {{.Node}} {{.CurrentState}}")
        ),
        "t2aaaaaaaaaa node-2 Running 5 seconds ago\n"
    );
    assert_eq!(
        ps(true, &["desired-state=running"], None),
        "t1new0000000\nt2aaaaaaaaaa\n"
    );
    assert_eq!(
        ps(false, &["id=t2"], Some("json")),
        "{\"CurrentState\":\"Running 5 seconds ago\",\"DesiredState\":\"Running\",\"Error\":\"\",\"ID\":\"t2aaaaaaaaaa\",\"Image\":\"nginx:1.27\",\"Name\":\"top.2\",\"Node\":\"node-2\",\"Ports\":\"\"}\n"
    );
}

#[test]
fn network_ls_rows() {
    let nets = vec![
        fixtures::network(
            "63d1ff1f77b07ca51070a8c227e962",
            "dev",
            &[("usage", "prod"), ("team", "a")],
        ),
        fixtures::network("95e74588f40db048e86320c6526440", "foo", &[]),
    ];
    let ls = |no_trunc: bool, filter: &[&str], format: &str| {
        NetworkLs::new(false, no_trunc, &flags(filter, Some(format)))
            .unwrap()
            .render(&nets)
            .unwrap()
    };
    assert_eq!(
        ls(false, &[], "{{.ID}}: {{.Driver}}"),
        "63d1ff1f77b0: overlay\n95e74588f40d: overlay\n"
    );
    assert_eq!(
        ls(
            true,
            &["label=usage"],
            "{{.ID}} {{.Labels}} {{.Label \"usage\"}}"
        ),
        "63d1ff1f77b07ca51070a8c227e962 team=a,usage=prod prod\n"
    );
    assert_eq!(
        ls(
            false,
            &["name=fo"],
            "table {{.Name}}\t{{.Scope}}\t{{.Internal}}\t{{.CreatedAt}}"
        ),
        "NAME      SCOPE     INTERNAL   CREATED AT\nfoo       swarm     false      2024-05-01 12:00:00.5 +0000 UTC\n"
    );
}

#[test]
fn stack_ls_rows() {
    let ls = StackLs::new(Some("{{.Name}}: {{.Services}}")).unwrap();
    assert_eq!(ls.render(&services()).unwrap().unwrap(), "shop: 1\n");
    let json = StackLs::new(Some("json")).unwrap();
    assert_eq!(
        json.render(&services()).unwrap().unwrap(),
        "{\"Name\":\"shop\",\"Services\":\"1\"}\n"
    );
    assert!(
        StackLs::new(None)
            .unwrap()
            .render(&services())
            .unwrap()
            .is_none()
    );
}

#[test]
fn inspect_format_on_service_node_and_network_objects() {
    let svc = services();
    let inspect = |format: Option<&str>| Inspect::new(format).unwrap().render(&svc).unwrap();
    assert_eq!(inspect(Some("{{.Spec.Name}}")), "web\ntop\n");
    assert_eq!(
        inspect(Some(
            "{{index .Spec.Labels \"com.docker.stack.namespace\"}}"
        )),
        "shop\n<no value>\n"
    );
    assert_eq!(
        inspect(Some("{{.ID}} {{.ServiceStatus.RunningTasks}}")),
        "0zmvwuiu3vue000000000 10\nfm6uf97exkul000000000 5\n"
    );
    assert_eq!(
        inspect(Some("{{json .Spec.TaskTemplate.ContainerSpec.Image}}")),
        "\"nginx:alpine@sha256:0123\"\n\"nginx:alpine@sha256:0123\"\n"
    );
    // No format, or json: the usual indented JSON.
    assert_eq!(inspect(None), crate::format::json(&svc));
    assert_eq!(inspect(Some("json")), crate::format::json(&svc));
    let node = fixtures::node("n1", "host-1", NodeRole::Manager, &[]);
    assert_eq!(
        Inspect::new(Some(
            "{{.Description.Hostname}} {{.Spec.Role}} {{.ManagerStatus.Leader}}"
        ))
        .unwrap()
        .render(&[node])
        .unwrap(),
        "host-1 manager true\n"
    );
    let net = fixtures::network("net1", "backend", &[]);
    assert_eq!(
        Inspect::new(Some(
            "{{.Name}}{{.Spec.Name}} {{.Spec.DriverConfiguration.Name}}"
        ))
        .unwrap()
        .render(&[net])
        .unwrap(),
        "<no value>backend overlay\n"
    );
    assert!(
        Inspect::new(Some("{{.Spec.Name"))
            .err()
            .unwrap()
            .to_string()
            .starts_with("template parsing error: ")
    );
}

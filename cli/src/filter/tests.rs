use super::*;
use crate::fixtures::{self, labels};
use shoal_api::objects::{NodeRole, ServiceMode, TaskState};

fn flags(args: &[&str]) -> Filters {
    Filters::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn services() -> Vec<ServiceView> {
    let rep = ServiceMode::Replicated { replicas: 2 };
    vec![
        fixtures::service("0bcjwfh8ychr", "redis", rep.clone(), &[]),
        fixtures::service(
            "36xvvwwauej0",
            "frontend",
            rep.clone(),
            &[("project", "project-a")],
        ),
        fixtures::service(
            "01sl1rp6nj5u",
            "frontend2",
            rep.clone(),
            &[("project", "project-b")],
        ),
        fixtures::service("w7y0v2yrn620", "top", ServiceMode::Global {}, &[]),
    ]
}

fn pick_services(args: &[&str]) -> Vec<String> {
    let f = ServiceFilter::new(flags(args)).unwrap();
    services()
        .into_iter()
        .filter(|s| f.matches(s))
        .map(|s| s.service.spec.name)
        .collect()
}

#[test]
fn service_filters_from_docker_docs() {
    // docs/reference/commandline/service_ls.md
    assert_eq!(pick_services(&["id=0bcjw"]), ["redis"]);
    assert_eq!(pick_services(&["label=project"]), ["frontend", "frontend2"]);
    assert_eq!(pick_services(&["label=project=project-a"]), ["frontend"]);
    assert_eq!(pick_services(&["mode=global"]), ["top"]);
    assert_eq!(pick_services(&["name=redis"]), ["redis"]);
    // name is a prefix match, as swarmkit's NamePrefixes.
    assert_eq!(pick_services(&["name=front"]), ["frontend", "frontend2"]);
    assert!(pick_services(&["name=edis"]).is_empty());
    assert_eq!(pick_services(&[]).len(), 4);
}

#[test]
fn same_key_ors_different_keys_and() {
    assert_eq!(pick_services(&["name=redis", "name=top"]), ["redis", "top"]);
    assert_eq!(
        pick_services(&["name=front", "mode=global"]),
        Vec::<String>::new()
    );
    assert_eq!(
        pick_services(&["name=front", "label=project=project-b"]),
        ["frontend2"]
    );
    // Labels AND even under one key.
    assert!(pick_services(&["label=project=project-a", "label=project=project-b"]).is_empty());
    // Keys are lower-cased and blanks trimmed, as Docker's FilterOpt does.
    assert_eq!(pick_services(&[" NAME = redis "]), ["redis"]);
}

#[test]
fn refusals_read_like_docker() {
    assert_eq!(
        ServiceFilter::new(flags(&["foo=bar"]))
            .unwrap_err()
            .to_string(),
        "invalid filter 'foo'"
    );
    assert_eq!(
        Filters::parse(&["name".to_string()])
            .unwrap_err()
            .to_string(),
        "invalid argument \"name\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
    );
    assert_eq!(
        ServiceFilter::new(flags(&["mode=job"]))
            .unwrap_err()
            .to_string(),
        "invalid filter 'mode=job': use replicated or global"
    );
    assert_eq!(
        NodeFilter::new(flags(&["role=boss"]))
            .unwrap_err()
            .to_string(),
        "invalid filter 'role=boss': use manager or worker"
    );
    assert_eq!(
        TaskFilter::new(flags(&["desired-state=sleeping"]))
            .unwrap_err()
            .to_string(),
        "invalid filter 'desired-state=sleeping': use running, shutdown or accepted"
    );
    // Each command takes its own keys.
    assert!(ServiceFilter::new(flags(&["role=manager"])).is_err());
    assert!(NodeFilter::new(flags(&["mode=global"])).is_err());
    assert!(NetworkFilter::new(flags(&["desired-state=running"])).is_err());
    // An empty flag is ignored.
    assert!(Filters::parse(&[String::new()]).unwrap().is_empty());
}

fn nodes() -> Vec<Node> {
    vec![
        fixtures::node(
            "e216jshn25ckzbvmwlnh5jr3g",
            "swarm-manager1",
            NodeRole::Manager,
            &[("region", "region-a")],
        ),
        fixtures::node(
            "1bcef6utixb0l0ca7gxuivsj0",
            "swarm-worker2",
            NodeRole::Worker,
            &[("region", "region-b")],
        ),
        fixtures::node(
            "38ciaotwjuritcdtn9npbnkuz",
            "swarm-worker1",
            NodeRole::Worker,
            &[],
        ),
    ]
}

fn pick_nodes(args: &[&str]) -> Vec<String> {
    let f = NodeFilter::new(flags(args)).unwrap();
    nodes()
        .into_iter()
        .filter(|n| f.matches(n))
        .map(|n| n.description.hostname)
        .collect()
}

#[test]
fn node_filters_from_docker_docs() {
    // docs/reference/commandline/node_ls.md
    assert_eq!(pick_nodes(&["id=1"]), ["swarm-worker2"]);
    assert_eq!(pick_nodes(&["name=swarm-manager1"]), ["swarm-manager1"]);
    assert_eq!(
        pick_nodes(&["name=swarm-worker"]),
        ["swarm-worker2", "swarm-worker1"]
    );
    assert_eq!(pick_nodes(&["role=manager"]), ["swarm-manager1"]);
    assert_eq!(
        pick_nodes(&["role=worker"]),
        ["swarm-worker2", "swarm-worker1"]
    );
    assert_eq!(
        pick_nodes(&["node.label=region"]),
        ["swarm-manager1", "swarm-worker2"]
    );
    assert_eq!(
        pick_nodes(&["node.label=region=region-a"]),
        ["swarm-manager1"]
    );
    assert_eq!(pick_nodes(&["label=region=region-b"]), ["swarm-worker2"]);
    assert_eq!(pick_nodes(&["membership=accepted"]).len(), 3);
    assert!(pick_nodes(&["membership=pending"]).is_empty());
    assert_eq!(
        pick_nodes(&["role=worker", "name=swarm-worker1", "name=swarm-manager1"]),
        ["swarm-worker1"]
    );
}

#[test]
fn task_filters_from_docker_docs() {
    use TaskState::*;
    let mut old = fixtures::task("ky2re9oz86r9x", "redis", 1, "manager1", Shutdown, Shutdown);
    old.task.node_id = "manager1-id".into();
    let tasks = [
        fixtures::task("0qihejybwf1x", "redis", 1, "manager1", Running, Running),
        fixtures::task("8ryt076polmc", "redis", 4, "worker1", Running, Running),
        fixtures::task("8eaxrb2fqpbn", "redis", 10, "manager1", Running, Running),
        old,
        fixtures::task(
            "w48spazhbmxc",
            "voting_redis",
            1,
            "worker2",
            Pending,
            Accepted,
        ),
    ];
    let redis_labels = labels(&[("usage", "cache")]);
    let mut cx = TaskContext {
        self_id: "worker1-id",
        ..TaskContext::default()
    };
    cx.service_labels.insert("redis-id", &redis_labels);
    let pick = |args: &[&str]| -> Vec<String> {
        let f = TaskFilter::new(flags(args)).unwrap();
        tasks
            .iter()
            .filter(|t| f.matches(t, &cx))
            .map(|t| t.task.id.clone())
            .collect()
    };
    // docs/reference/commandline/service_ps.md and stack_ps.md
    assert_eq!(pick(&["id=8"]), ["8ryt076polmc", "8eaxrb2fqpbn"]);
    // Task names are `service.slot.id`; the filter is a prefix, so redis.1 is also redis.10.
    assert_eq!(
        pick(&["name=redis.1"]),
        ["0qihejybwf1x", "8eaxrb2fqpbn", "ky2re9oz86r9x"]
    );
    assert_eq!(pick(&["name=redis.1.0q"]), ["0qihejybwf1x"]);
    assert_eq!(pick(&["name=voting_redis"]), ["w48spazhbmxc"]);
    assert_eq!(pick(&["node=worker1"]), ["8ryt076polmc"]);
    assert_eq!(
        pick(&["node=worker1-id", "node=worker2"]),
        ["8ryt076polmc", "w48spazhbmxc"]
    );
    assert_eq!(pick(&["node=self"]), ["8ryt076polmc"]);
    assert_eq!(pick(&["desired-state=shutdown"]), ["ky2re9oz86r9x"]);
    assert_eq!(pick(&["desired-state=accepted"]), ["w48spazhbmxc"]);
    assert_eq!(
        pick(&["desired-state=running", "node=manager1"]),
        ["0qihejybwf1x", "8eaxrb2fqpbn"]
    );
    assert_eq!(pick(&["label=usage=cache"]).len(), 4);
    assert_eq!(pick(&["service=voting_redis"]), ["w48spazhbmxc"]);
    assert!(TaskFilter::new(flags(&["node=self"])).unwrap().wants_self());
    assert!(TaskFilter::new(flags(&["label=x"])).unwrap().wants_labels());
}

#[test]
fn network_filters_from_docker_docs() {
    let nets = [
        fixtures::network("95e74588f40db048e86320c6", "foo", &[]),
        fixtures::network("06e7eef0a170aaaa", "foobar", &[("usage", "dev")]),
        fixtures::network("63d1ff1f77b07ca51070a8c2", "dev", &[("usage", "prod")]),
    ];
    let pick = |args: &[&str]| -> Vec<String> {
        let f = NetworkFilter::new(flags(args)).unwrap();
        nets.iter()
            .filter(|n| f.matches(n))
            .map(|n| n.spec.name.clone())
            .collect()
    };
    // docs/reference/commandline/network_ls.md
    assert_eq!(pick(&["name=foobar"]), ["foobar"]);
    assert_eq!(pick(&["name=foo"]), ["foo", "foobar"]);
    assert_eq!(pick(&["id=95e"]), ["foo"]);
    assert_eq!(pick(&["label=usage"]), ["foobar", "dev"]);
    assert_eq!(pick(&["label=usage=prod"]), ["dev"]);
    assert_eq!(pick(&["driver=overlay"]).len(), 3);
    assert!(pick(&["driver=bridge"]).is_empty());
    assert_eq!(pick(&["scope=swarm"]).len(), 3);
    assert!(pick(&["scope=local"]).is_empty());
    assert_eq!(pick(&["type=custom"]).len(), 3);
    assert!(pick(&["type=builtin"]).is_empty());
    assert_eq!(
        NetworkFilter::new(flags(&["type=x"]))
            .unwrap_err()
            .to_string(),
        "invalid filter 'type=x': use custom or builtin"
    );
}

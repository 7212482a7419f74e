use super::*;
use shoal_api::dispatch::*;
use shoal_api::objects::*;

fn network(id: &str, vni: u32) -> Network {
    let mut options = std::collections::BTreeMap::new();
    options.insert(VXLAN_ID_OPTION.to_string(), vni.to_string());
    Network {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        spec: NetworkSpec {
            name: id.into(),
            labels: Default::default(),
            driver_configuration: Driver {
                name: "overlay".into(),
                options: Default::default(),
            },
            ingress: false,
            attachable: false,
            internal: false,
            ipam_options: IpamOptions::default(),
        },
        driver_state: Driver {
            name: "overlay".into(),
            options,
        },
        ipam_options: IpamOptions::default(),
    }
}

fn task(id: &str, net: &str, addr: &str) -> Task {
    Task {
        id: id.into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: "s".into(),
        slot: 1,
        node_id: "me".into(),
        spec: TaskSpec::default(),
        spec_version: Version::default(),
        status: TaskStatus {
            state: TaskState::Running,
            ..Default::default()
        },
        desired_state: TaskState::Running,
        networks_attachments: vec![NetworkAttachment {
            network_id: net.into(),
            addresses: vec![addr.into()],
            aliases: vec![],
        }],
        restart_count: 0,
    }
}

fn backend(node: &str, net: &str, addr: &str) -> Backend {
    Backend {
        task_id: format!("t-{addr}"),
        task_name: String::new(),
        node_id: node.into(),
        network_id: net.into(),
        addr: addr.into(),
        state: TaskState::Running,
    }
}

#[test]
fn plan_has_local_networks_and_exactly_the_remote_tasks() {
    let view = NodeView {
        tasks: vec![task("t1", "app", "198.19.1.3/24")],
        networks: vec![
            NetworkView {
                network: network("app", 4097),
                peers: vec![
                    NetworkPeer {
                        node_id: "n2".into(),
                        addr: "198.18.0.2".into(),
                        endpoint: String::new(),
                    },
                    NetworkPeer {
                        node_id: "n3".into(),
                        addr: "198.18.0.3".into(),
                        endpoint: String::new(),
                    },
                ],
            },
            NetworkView {
                network: network("other", 4098),
                peers: vec![],
            },
        ],
        endpoints: vec![ServiceEndpoint {
            service_id: "s".into(),
            service_name: "web".into(),
            mode: EndpointMode::Vip,
            ports: vec![],
            virtual_ips: vec![],
            backends: vec![
                backend("me", "app", "198.19.1.3/24"),
                backend("n2", "app", "198.19.1.4/24"),
                backend("n3", "app", "198.19.1.5/24"),
                backend("n2", "other", "198.19.2.9/24"),
            ],
            aliases: vec![],
            session_affinity: Default::default(),
        }],
        ..Default::default()
    };
    let plans = desired(&view, "me");
    assert_eq!(plans.len(), 1, "only the network a local task uses");
    let p = &plans[0];
    assert_eq!(
        (p.vni, p.bridge(), p.vxlan()),
        (4097, "sb4097".into(), "sv4097".into())
    );
    let remotes: Vec<(String, String, String)> = p
        .remotes
        .iter()
        .map(|r| (r.ip.to_string(), r.mac.clone(), r.vtep.to_string()))
        .collect();
    assert_eq!(
        remotes,
        [
            (
                "198.19.1.4".into(),
                "02:42:c6:13:01:04".into(),
                "198.18.0.2".into()
            ),
            (
                "198.19.1.5".into(),
                "02:42:c6:13:01:05".into(),
                "198.18.0.3".into()
            ),
        ]
    );
}

#[test]
fn diff_adds_what_is_missing_and_removes_what_is_stale() {
    let set = |v: &[(&str, &str)]| -> std::collections::BTreeSet<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let want = set(&[
        ("02:42:c6:13:01:04", "198.18.0.2"),
        ("02:42:c6:13:01:05", "198.18.0.3"),
    ]);
    let have = set(&[
        ("02:42:c6:13:01:05", "198.18.0.3"),
        ("02:42:c6:13:01:09", "198.18.0.2"),
    ]);
    let (add, remove) = diff(&want, &have);
    assert_eq!(
        add,
        vec![("02:42:c6:13:01:04".to_string(), "198.18.0.2".to_string())]
    );
    assert_eq!(
        remove,
        vec![("02:42:c6:13:01:09".to_string(), "198.18.0.2".to_string())]
    );
    assert_eq!(diff(&want, &want), (vec![], vec![]));
}

#[test]
fn ingress_is_planned_on_every_node() {
    let mut ingress = network("ing", 4096);
    ingress.spec.ingress = true;
    let view = NodeView {
        networks: vec![NetworkView {
            network: ingress,
            peers: vec![],
        }],
        ..Default::default()
    };
    let plans = desired(&view, "me");
    assert_eq!(plans.iter().map(|p| p.vni).collect::<Vec<_>>(), [4096]);
}

/// With Docker's DOCKER-USER chain present, shoal's bridges are accepted there once, however
/// often it runs; without the chain nothing is touched.
#[test]
fn docker_forward_accepts_shoal_bridges_once() {
    let root = nix::unistd::geteuid().is_root();
    let have = std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok();
    if !(root && have) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "docker_forward_accepts_shoal_bridges_once needs root and iptables under CI=true"
            );
        }
        eprintln!("skipping docker_forward_accepts_shoal_bridges_once: needs root and iptables");
        return;
    }
    let ns = format!("shoal-fwdtest-{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap()
    };
    ip(&["netns", "add", &ns]);
    let path = format!("/run/netns/{ns}");
    let rules = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let without = super::apply::accept_in_docker_forward().unwrap();
        let ipt = |args: &[&str]| {
            std::process::Command::new("iptables")
                .args(args)
                .output()
                .unwrap()
        };
        ipt(&["-N", "DOCKER-USER"]);
        let first = super::apply::accept_in_docker_forward().unwrap();
        let second = super::apply::accept_in_docker_forward().unwrap();
        let listed = String::from_utf8(ipt(&["-S", "DOCKER-USER"]).stdout).unwrap();
        (without, first, second, listed)
    })
    .join();
    ip(&["netns", "del", &ns]);
    let (without, first, second, listed) = rules.unwrap();
    assert!(!without && first && second);
    assert_eq!(listed.matches("-i sb+ -j ACCEPT").count(), 1, "{listed}");
    assert_eq!(listed.matches("-o sb+ -j ACCEPT").count(), 1, "{listed}");
}

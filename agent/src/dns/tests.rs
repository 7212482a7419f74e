use super::answer::{Outcome, answer};
use super::records::scope_for;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_api::dispatch::*;
use shoal_api::objects::*;

fn network(id: &str, ingress: bool) -> NetworkView {
    NetworkView {
        network: Network {
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
                ingress,
                attachable: false,
                internal: false,
                ipam_options: IpamOptions::default(),
            },
            driver_state: Driver::default(),
            ipam_options: IpamOptions::default(),
        },
        peers: vec![],
    }
}

fn backend(name: &str, net: &str, addr: &str) -> Backend {
    Backend {
        task_id: name.into(),
        task_name: name.into(),
        node_id: "n".into(),
        network_id: net.into(),
        addr: addr.into(),
        state: TaskState::Running,
    }
}

fn endpoint(
    name: &str,
    mode: EndpointMode,
    vips: &[(&str, &str)],
    backends: Vec<Backend>,
) -> ServiceEndpoint {
    ServiceEndpoint {
        service_id: name.into(),
        service_name: name.into(),
        mode,
        ports: vec![],
        virtual_ips: vips
            .iter()
            .map(|(n, a)| VirtualIp {
                network_id: n.to_string(),
                addr: a.to_string(),
            })
            .collect(),
        backends,
        aliases: vec![
            ("app".into(), format!("{name}-alias")),
            ("other".into(), format!("{name}-elsewhere")),
        ],
        session_affinity: Default::default(),
    }
}

fn asker(nets: &[&str]) -> Task {
    Task {
        id: "asker".into(),
        version: Version::default(),
        created_at: String::new(),
        updated_at: String::new(),
        service_id: "client".into(),
        slot: 1,
        node_id: "n".into(),
        spec: TaskSpec::default(),
        spec_version: Version::default(),
        status: TaskStatus::default(),
        desired_state: TaskState::Running,
        networks_attachments: nets
            .iter()
            .map(|n| NetworkAttachment {
                network_id: n.to_string(),
                addresses: vec![],
                aliases: vec![],
            })
            .collect(),
        restart_count: 0,
    }
}

fn view() -> NodeView {
    NodeView {
        networks: vec![
            network("app", false),
            network("other", false),
            network("ing", true),
        ],
        endpoints: vec![
            endpoint(
                "web",
                EndpointMode::Vip,
                &[("app", "198.19.1.2/24"), ("ing", "198.19.0.2/24")],
                vec![
                    backend("web.1.aaa", "app", "198.19.1.3/24"),
                    backend("web.2.bbb", "app", "198.19.1.4/24"),
                    backend("web.1.aaa", "ing", "198.19.0.3/24"),
                ],
            ),
            endpoint(
                "db",
                EndpointMode::Dnsrr,
                &[],
                vec![backend("db.1.ccc", "app", "198.19.1.9/24")],
            ),
            endpoint(
                "secret",
                EndpointMode::Vip,
                &[("other", "198.19.2.2/24")],
                vec![backend("secret.1.ddd", "other", "198.19.2.3/24")],
            ),
        ],
        ..Default::default()
    }
}

#[test]
fn names_are_scoped_to_shared_networks() {
    let s = scope_for(&view(), &asker(&["app", "ing"]));
    let ips = |n: &str| {
        s.lookup(n)
            .map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(
        ips("web"),
        Some(vec!["198.19.1.2".into()]),
        "the VIP on the shared network only"
    );
    assert_eq!(ips("WEB."), ips("web"), "case and trailing dot");
    assert_eq!(
        ips("tasks.web"),
        Some(vec!["198.19.1.3".into(), "198.19.1.4".into()])
    );
    assert_eq!(
        ips("db"),
        Some(vec!["198.19.1.9".into()]),
        "dnsrr: the task addresses"
    );
    assert_eq!(
        ips("web.2.bbb"),
        Some(vec!["198.19.1.4".into()]),
        "task names"
    );
    assert_eq!(
        ips("secret"),
        None,
        "another network's service is invisible"
    );
    assert_eq!(
        ips("web-alias"),
        ips("web"),
        "an alias answers like the name"
    );
    assert_eq!(
        ips("web-elsewhere"),
        None,
        "an alias only on its own network"
    );
    assert_eq!(
        s.lookup_ptr("3.1.19.198.in-addr.arpa.").map(String::as_str),
        Some("web.1.aaa")
    );
    assert_eq!(
        s.lookup_ptr("2.1.19.198.in-addr.arpa").map(String::as_str),
        Some("web")
    );
}

/// A stack's service `api` on networks `front` and `back`, with its Compose name as an alias
/// on `back` only, and a second service sharing that alias there.
fn alias_view(mode: EndpointMode) -> NodeView {
    let mut api = endpoint(
        "stack_api",
        mode,
        &[("front", "198.19.5.2/24"), ("back", "198.19.6.2/24")],
        vec![
            backend("stack_api.1.a", "front", "198.19.5.3/24"),
            backend("stack_api.1.a", "back", "198.19.6.3/24"),
            backend("stack_api.2.b", "back", "198.19.6.4/24"),
        ],
    );
    api.aliases = vec![("back".into(), "api".into())];
    let mut twin = endpoint(
        "other_api",
        mode,
        &[("back", "198.19.6.20/24")],
        vec![backend("other_api.1.c", "back", "198.19.6.21/24")],
    );
    twin.aliases = vec![("back".into(), "API".into())];
    NodeView {
        networks: vec![network("front", false), network("back", false)],
        endpoints: vec![api, twin],
        ..Default::default()
    }
}

#[test]
fn an_alias_and_tasks_alias_answer_on_the_alias_network_only() {
    let ips = |s: &super::records::Scope, n: &str| {
        s.lookup(n)
            .map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
    };
    let on_back = scope_for(&alias_view(EndpointMode::Vip), &asker(&["back"]));
    assert_eq!(
        ips(&on_back, "api"),
        Some(vec!["198.19.6.2".into(), "198.19.6.20".into()]),
        "both services' VIPs on back"
    );
    assert_eq!(
        ips(&on_back, "tasks.api"),
        Some(vec![
            "198.19.6.3".into(),
            "198.19.6.4".into(),
            "198.19.6.21".into()
        ])
    );
    let both = scope_for(&alias_view(EndpointMode::Vip), &asker(&["front", "back"]));
    assert_eq!(
        ips(&both, "api"),
        Some(vec!["198.19.6.2".into(), "198.19.6.20".into()]),
        "never the VIP on front, where the alias does not hold"
    );
    let on_front = scope_for(&alias_view(EndpointMode::Vip), &asker(&["front"]));
    assert_eq!(ips(&on_front, "api"), None);
    assert_eq!(ips(&on_front, "tasks.api"), None);
    assert_eq!(
        ips(&on_front, "stack_api"),
        Some(vec!["198.19.5.2".into()]),
        "the full name still answers"
    );
    let rr = scope_for(&alias_view(EndpointMode::Dnsrr), &asker(&["back"]));
    assert_eq!(
        ips(&rr, "api"),
        Some(vec![
            "198.19.6.3".into(),
            "198.19.6.4".into(),
            "198.19.6.21".into()
        ]),
        "dnsrr: the task addresses on back"
    );
}

#[test]
fn a_tasks_dns_servers_are_its_forwarders() {
    let mut t = asker(&["app"]);
    assert!(
        scope_for(&view(), &t).forwarders.is_empty(),
        "none: the host's"
    );
    t.spec.container_spec.dns_config = Some(DnsConfig {
        nameservers: vec!["198.18.0.53".into(), "not-an-ip".into()],
        ..Default::default()
    });
    assert_eq!(
        scope_for(&view(), &t).forwarders,
        ["198.18.0.53:53".parse::<std::net::SocketAddr>().unwrap()]
    );
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn reply(o: Outcome) -> Message {
    match o {
        Outcome::Reply(r) => Message::from_vec(&r).unwrap(),
        _ => panic!("expected a reply"),
    }
}

#[test]
fn answers_a_aaaa_ptr_and_forwards_the_rest() {
    let s = scope_for(&view(), &asker(&["app"]));
    let a = reply(answer(&s, &query("tasks.web.", RecordType::A)));
    assert_eq!(a.metadata.id, 4242);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    let got: Vec<String> = a
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["198.19.1.3", "198.19.1.4"]);
    assert!(a.answers.iter().all(|r| r.ttl == super::answer::TTL));
    let aaaa = reply(answer(&s, &query("web.", RecordType::AAAA)));
    assert_eq!(
        (aaaa.metadata.response_code, aaaa.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let ptr = reply(answer(
        &s,
        &query("4.1.19.198.in-addr.arpa.", RecordType::PTR),
    ));
    assert_eq!(ptr.answers.len(), 1);
    assert!(matches!(
        answer(&s, &query("example.org.", RecordType::A)),
        Outcome::Forward
    ));
    assert!(matches!(
        answer(&s, &query("secret.", RecordType::A)),
        Outcome::Forward
    ));
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_never_panic() {
    let s = scope_for(&view(), &asker(&["app"]));
    let bad = reply(answer(&s, &[0x12, 0x34, 0xff]));
    assert_eq!(
        (bad.metadata.id, bad.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert!(matches!(answer(&s, &[7]), Outcome::Drop));
    // A deterministic stream of junk and of mangled real queries.
    let mut x: u32 = 12345;
    let mut next = || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (x >> 16) as u8
    };
    let good = query("web.", RecordType::A);
    for i in 0..5000 {
        let mut p: Vec<u8> = if i % 2 == 0 {
            (0..(next() as usize % 64)).map(|_| next()).collect()
        } else {
            good.clone()
        };
        if !p.is_empty() {
            let at = next() as usize % p.len();
            p[at] = next();
            p.truncate(p.len() - (next() as usize % p.len().max(1)).min(p.len()));
        }
        let _ = answer(&s, &p);
    }
}
